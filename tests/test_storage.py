"""Storage: local and S3 round trips of real media, multipart, fetch caching, folders, errors, retries.

S3 is moto's server on 127.0.0.1 (fixtures in tests/s3server.py); faults come from a real HTTP
front that answers 503s or resets connections before forwarding to it.
"""
from __future__ import annotations

import hashlib
import pickle
import socket
from pathlib import Path

import boto3
import pytest

from farm.errors import FarmError
from farm.storage import Storage, StorageOptions
from tests.s3server import TEST_ENV, moto_auth_enforced

MEDIA = Path(__file__).resolve().parents[1] / "jobs" / "media"
CLIP = MEDIA / "gesture_asl_please.mkv"
OTHER_CLIP = MEDIA / "gesture_asl_book.mkv"
MIB = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def count_requests(storage: Storage, operation: str) -> list[int]:
    """A one-item list that counts the HTTP requests (retries included) `storage` sends for an operation."""
    sent = [0]

    def count(**kwargs) -> None:
        sent[0] += 1

    storage.s3_client.meta.events.register(f"before-send.s3.{operation}", count)
    return sent


@pytest.fixture(params=["local", "s3"])
def store_and_base(request, tmp_path) -> tuple[Storage, str]:
    """The same tests on a local folder and on a fresh S3 bucket."""
    if request.param == "local":
        return Storage(), str(tmp_path / "out")
    return request.getfixturevalue("s3_bucket")


@pytest.fixture
def missing_bucket(s3_endpoint) -> tuple[Storage, str]:
    return Storage(StorageOptions(endpoint_url=s3_endpoint)), "s3://farm-test-no-such-bucket"


# URIs ----------------------------------------------------------------------------------------


def test_join_extends_s3_uris_by_relative_parts():
    assert Storage.join("s3://b/x", "a", "b.mp4") == "s3://b/x/a/b.mp4"
    assert Storage.join("s3://b/x/", "shots/abc/video.mp4") == "s3://b/x/shots/abc/video.mp4"
    assert Storage.join("s3://b", "a") == "s3://b/a"


def test_join_gives_local_paths_for_paths_and_file_uris():
    assert Storage.join("/data/out", "a", "b.mp4") == "/data/out/a/b.mp4"
    assert Storage.join("file:///data/out", "a") == "/data/out/a"
    assert Storage.join("out", "./a//b") == "out/a/b"


@pytest.mark.parametrize("part", ["..", "shots/../../etc", "/etc/passwd", "s3://other/key"])
@pytest.mark.parametrize("base", ["s3://b/x", "/data/out"])
def test_join_refuses_parts_that_climb_out_of_the_base(base, part):
    with pytest.raises(FarmError, match="not allowed|absolute") as error:
        Storage.join(base, "ok", part)
    assert part in str(error.value)


def test_is_remote_only_for_s3():
    assert Storage.is_remote("s3://b/k")
    assert not any(Storage.is_remote(u) for u in ("/x/y.mp4", "file:///x/y.mp4", "rel/y.mp4"))
    assert Storage().local_path("file:///x/y%20z.mp4") == Path("/x/y z.mp4")
    assert Storage().local_path("s3://b/k") is None


@pytest.mark.parametrize("uri", ["http://example.com/a.mp4", "gs://bucket/a.mp4", "ftp://host/a.mp4"])
def test_unsupported_schemes_name_the_supported_ones(uri, tmp_path):
    for call in (lambda: Storage().fetch(uri, tmp_path), lambda: Storage().put_bytes(b"x", uri)):
        with pytest.raises(FarmError, match=r"unsupported URI scheme .*file:///.*s3://bucket/key") as error:
            call()
        assert uri in str(error.value)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [("s3://", "no bucket"), ("s3:///key.mp4", "no bucket"), ("s3://bucket", "no object key"), ("s3://bucket/", "no object key")],
)
def test_s3_uris_need_bucket_and_key(uri, problem, tmp_path):
    for call in (lambda: Storage().fetch(uri, tmp_path), lambda: Storage().get_bytes(uri)):
        with pytest.raises(FarmError, match=problem) as error:
            call()
        assert uri in str(error.value)


# Round trips ---------------------------------------------------------------------------------


def test_local_round_trip_is_byte_exact_and_leaves_no_temporary_files(tmp_path):
    storage = Storage()
    target = Storage.join(str(tmp_path), "out", "clip.mkv")
    storage.put_file(CLIP, target)
    assert sha256(storage.get_bytes(target)) == sha256(CLIP.read_bytes())
    assert storage.fetch(target, tmp_path / "cache") == Path(target)
    storage.put_file(Path(target), target)  # the same file: left alone
    storage.put_bytes(b"manifest", (tmp_path / "out" / "manifest.json").as_uri())
    assert storage.get_bytes(str(tmp_path / "out" / "manifest.json")) == b"manifest"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mkv", "manifest.json"]
    assert sha256(Path(target).read_bytes()) == sha256(CLIP.read_bytes())


def test_s3_round_trip_is_byte_exact(s3_bucket, tmp_path):
    storage, bucket = s3_bucket
    uri = Storage.join(bucket, "inputs", CLIP.name)
    storage.put_file(CLIP, uri)
    fetched = storage.fetch(uri, tmp_path / "cache")
    assert fetched.suffix == ".mkv" and fetched.parent == tmp_path / "cache"
    assert sha256(fetched.read_bytes()) == sha256(CLIP.read_bytes())
    assert storage.get_bytes(uri) == CLIP.read_bytes()
    storage.put_bytes(b'{"status": "done"}', Storage.join(bucket, "manifest.json"))
    assert storage.get_bytes(Storage.join(bucket, "manifest.json")) == b'{"status": "done"}'
    assert storage.exists(uri) and not storage.exists(Storage.join(bucket, "inputs", "nothing.mkv"))
    storage.put_bytes(b"", Storage.join(bucket, "empty.txt"))
    assert storage.fetch(Storage.join(bucket, "empty.txt"), tmp_path / "cache").read_bytes() == b""


def test_big_file_goes_up_in_parts_and_comes_back_intact(s3_bucket, tmp_path):
    storage, bucket = s3_bucket
    media = b"".join(p.read_bytes() for p in sorted(MEDIA.iterdir()))
    big = tmp_path / "big.bin"
    big.write_bytes((media * (40 * MIB // len(media) + 1))[: 40 * MIB])
    parts = count_requests(storage, "UploadPart")
    uri = Storage.join(bucket, "big.bin")
    storage.put_file(big, uri)
    etag = storage.s3_client.head_object(Bucket=bucket[len("s3://") :], Key="big.bin")["ETag"]
    assert etag.strip('"').endswith("-5") and parts[0] == 5  # 40 MiB in 8 MiB parts
    fetched = storage.fetch(uri, tmp_path / "cache")
    assert sha256(fetched.read_bytes()) == sha256(big.read_bytes())


def test_fetch_downloads_once_and_again_when_the_object_changes(s3_bucket, tmp_path):
    storage, bucket = s3_bucket
    uri = Storage.join(bucket, "clip.mkv")
    storage.put_file(CLIP, uri)
    gets = count_requests(storage, "GetObject")
    first = storage.fetch(uri, tmp_path)
    stat = first.stat()
    assert gets[0] == 1
    second = storage.fetch(uri, tmp_path)
    assert second == first and gets[0] == 1
    assert (second.stat().st_ino, second.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)

    storage.put_file(OTHER_CLIP, uri)
    changed = storage.fetch(uri, tmp_path)
    assert changed != first and gets[0] == 2
    assert changed.read_bytes() == OTHER_CLIP.read_bytes()


def test_storage_survives_pickling_for_remote_workers(s3_bucket):
    storage, bucket = s3_bucket
    storage.put_bytes(b"payload", Storage.join(bucket, "a.txt"))
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.options == storage.options and copy.get_bytes(Storage.join(bucket, "a.txt")) == b"payload"


# Folders -------------------------------------------------------------------------------------


def test_list_and_delete_prefix_treat_the_prefix_as_a_folder(store_and_base):
    storage, base = store_and_base
    names = ["campaign/shots/a/video.mp4", "campaign/shots/a/manifest.json", "campaign/shots/b/video.mp4", "campaign2/x.json"]
    for name in names:
        storage.put_bytes(name.encode(), Storage.join(base, name))
    campaign = Storage.join(base, "campaign")
    assert storage.list(campaign) == sorted(Storage.join(base, name) for name in names[:3])
    assert storage.list(Storage.join(base, "nothing")) == []

    storage.delete_prefix(Storage.join(campaign, "shots", "a"))
    storage.delete_prefix(Storage.join(campaign, "nothing"))
    assert storage.list(base) == [Storage.join(base, "campaign/shots/b/video.mp4"), Storage.join(base, "campaign2/x.json")]


def test_delete_prefix_refuses_a_whole_bucket(s3_bucket):
    storage, bucket = s3_bucket
    with pytest.raises(FarmError, match="whole bucket"):
        storage.delete_prefix(bucket)


# Errors --------------------------------------------------------------------------------------


def test_missing_local_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.mkv")
    for call in (lambda: Storage().fetch(missing, tmp_path), lambda: Storage().get_bytes(missing)):
        with pytest.raises(FarmError, match="file not found") as error:
            call()
        assert missing in str(error.value)
    with pytest.raises(FarmError, match="file not found"):
        Storage().put_file(tmp_path / "nope.mkv", str(tmp_path / "copy.mkv"))


def test_missing_object_is_named(s3_bucket, tmp_path):
    storage, bucket = s3_bucket
    missing = Storage.join(bucket, "nope.mkv")
    for call in (lambda: storage.fetch(missing, tmp_path), lambda: storage.get_bytes(missing)):
        with pytest.raises(FarmError, match="object not found") as error:
            call()
        assert missing in str(error.value)
    assert not storage.exists(missing)


def test_missing_bucket_is_named_by_every_operation(missing_bucket, tmp_path):
    storage, bucket = missing_bucket
    uri = Storage.join(bucket, "a.mkv")
    calls = [
        lambda: storage.fetch(uri, tmp_path),
        lambda: storage.get_bytes(uri),
        lambda: storage.exists(uri),
        lambda: storage.put_bytes(b"x", uri),
        lambda: storage.put_file(CLIP, uri),
        lambda: storage.list(uri),
        lambda: storage.delete_prefix(uri),
    ]
    for call in calls:
        with pytest.raises(FarmError, match="bucket farm-test-no-such-bucket does not exist") as error:
            call()
        assert uri in str(error.value)


def test_unknown_access_key_is_access_denied_without_printing_secrets(s3_bucket, s3_endpoint):
    storage, bucket = s3_bucket
    uri = Storage.join(bucket, "a.txt")
    storage.put_bytes(b"x", uri)
    with moto_auth_enforced(s3_endpoint), pytest.raises(FarmError, match="access denied") as error:
        storage.get_bytes(uri)
    message = str(error.value)
    assert uri in message and "AWS_ACCESS_KEY_ID" in message
    assert TEST_ENV["AWS_SECRET_ACCESS_KEY"] not in message and TEST_ENV["AWS_ACCESS_KEY_ID"] not in message


def test_user_without_permission_is_access_denied(s3_bucket, s3_endpoint, monkeypatch, tmp_path):
    storage, bucket = s3_bucket
    uri = Storage.join(bucket, "a.txt")
    storage.put_bytes(b"x", uri)
    iam = boto3.client("iam", endpoint_url=s3_endpoint)
    iam.create_user(UserName="no-rights")
    key = iam.create_access_key(UserName="no-rights")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    unprivileged = Storage(storage.options)
    calls = [(lambda: unprivileged.get_bytes(uri), "AccessDenied"), (lambda: unprivileged.fetch(uri, tmp_path), "HTTP 403")]
    with moto_auth_enforced(s3_endpoint):
        for call, reason in calls:
            with pytest.raises(FarmError, match=rf"access denied \({reason}\)") as error:
                call()
            assert uri in str(error.value) and key["SecretAccessKey"] not in str(error.value)


def test_no_credentials_says_how_to_provide_them(s3_bucket, monkeypatch):
    storage, bucket = s3_bucket
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    uri = Storage.join(bucket, "a.txt")
    with pytest.raises(FarmError, match="no AWS credentials found .*AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an instance role") as error:
        Storage(storage.options).get_bytes(uri)
    assert uri in str(error.value)


def test_inputs_outside_the_roots_are_refused_even_through_dot_dot_and_symlinks(tmp_path):
    inputs, outside = tmp_path / "inputs", tmp_path / "private"
    inputs.mkdir()
    outside.mkdir()
    (inputs / CLIP.name).write_bytes(CLIP.read_bytes())
    (outside / "secret.mkv").write_bytes(b"secret")
    (inputs / "link.mkv").symlink_to(outside / "secret.mkv")
    storage = Storage(StorageOptions(roots=(str(inputs),)))

    assert storage.fetch(str(inputs / CLIP.name), tmp_path / "cache") == inputs / CLIP.name
    for escape in (f"{inputs}/../private/secret.mkv", str(inputs / "link.mkv"), (outside / "secret.mkv").as_uri()):
        with pytest.raises(FarmError, match="outside the allowed input roots") as error:
            storage.fetch(escape, tmp_path / "cache")
        assert escape in str(error.value)


def test_unreachable_endpoint_is_reported_after_the_retries(s3_endpoint):
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        storage = Storage(StorageOptions(endpoint_url=endpoint, max_attempts=2))
        sent = count_requests(storage, "GetObject")
        with pytest.raises(FarmError, match=f"endpoint {endpoint} unreachable after 2 attempts") as error:
            storage.get_bytes("s3://bucket/a.txt")
    assert "s3://bucket/a.txt" in str(error.value) and sent[0] == 2


@pytest.mark.parametrize(
    ("option", "value"),
    [("multipart_chunk_mb", 4), ("multipart_threshold_mb", 0), ("max_attempts", 0), ("endpoint_url", "minio:9000")],
)
def test_bad_options_name_the_config_key(option, value):
    with pytest.raises(FarmError, match=f"storage.{option}"):
        StorageOptions(**{option: value})


# Retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("faults", [[503, 503], ["reset", "reset"]], ids=["503", "reset"])
def test_transient_faults_are_retried(s3_bucket, s3_faults, faults):
    storage, bucket = s3_bucket
    uri = Storage.join(bucket, CLIP.name)
    storage.put_file(CLIP, uri)
    front = s3_faults(faults)
    flaky = Storage(StorageOptions(endpoint_url=front.url, max_attempts=3))
    assert flaky.get_bytes(uri) == CLIP.read_bytes()
    assert front.requests == 3


@pytest.mark.parametrize("faults", [[503], ["reset"]], ids=["503", "reset"])
def test_without_retries_a_transient_fault_fails(s3_bucket, s3_faults, faults):
    storage, bucket = s3_bucket
    uri = Storage.join(bucket, CLIP.name)
    front = s3_faults(faults)
    with pytest.raises(FarmError, match="after 1 attempts") as error:
        Storage(StorageOptions(endpoint_url=front.url, max_attempts=1)).get_bytes(uri)
    assert uri in str(error.value) and front.requests == 1


def test_uploads_are_retried_too(s3_bucket, s3_faults):
    storage, bucket = s3_bucket
    uri = Storage.join(bucket, "manifest.json")
    front = s3_faults([500])
    Storage(StorageOptions(endpoint_url=front.url, max_attempts=2)).put_bytes(b'{"ok": true}', uri)
    assert storage.get_bytes(uri) == b'{"ok": true}' and front.requests == 2



def test_fetch_refuses_an_object_that_changes_while_it_downloads(s3_bucket, tmp_path):
    storage, bucket = s3_bucket
    uri = Storage.join(bucket, "clip.mkv")
    storage.put_file(CLIP, uri)
    writer = Storage(storage.options)

    def replace_object(**kwargs) -> None:  # runs after fetch's HEAD, before its GET
        writer.put_file(OTHER_CLIP, uri)

    storage.s3_client.meta.events.register_first("before-call.s3.GetObject", replace_object)
    with pytest.raises(FarmError, match="changed while it was being read") as error:
        storage.fetch(uri, tmp_path)
    assert uri in str(error.value) and list(tmp_path.iterdir()) == []
