"""Running other people's campaigns (issue 11, DESIGN §12): no secret leaves, no file of anyone else's
is touched, no setting escapes the operator, and every limit is checked before the work starts."""
from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from farm import api, cli
from farm.campaign import load_campaign
from farm.config import load_config
from farm.errors import FarmError
from farm.shot.types import Shot
from farm.storage import Storage, StorageOptions
from farm.storage.lease import LEASE, Lease
from farm.types import SHOT_ID
from tests.test_render import MEDIA

SMALL = ["output.size=64", "output.pose_preview=false"]
DRAWING = {"skeleton": MEDIA / "childdrawing_char1_skeleton.yaml", "mask": MEDIA / "childdrawing_char1_mask.png"}
PLEASE, CROWN = MEDIA / "gesture_asl_please.mkv", MEDIA / "childdrawing_char1.png"


def _campaign(tmp_path: Path, body: str, name: str = "c") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{body}")
    return path


def _shot(shot_id: str = "please", extra: str = "") -> str:
    return (f"  - {{id: {shot_id}, motion: {PLEASE}, character: {CROWN}, skeleton: {DRAWING['skeleton']}, "
            f"mask: {DRAWING['mask']}{extra}}}\n")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 1. Secrets through interpolation ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["defaults", "overrides"])
def test_a_campaign_cannot_interpolate_the_environment(tmp_path, where):
    body = ("defaults: ['prompt=${oc.env:AWS_SECRET_ACCESS_KEY}']\nshots:\n" + _shot() if where == "defaults"
            else "shots:\n" + _shot(extra=", overrides: ['prompt=${oc.env:AWS_SECRET_ACCESS_KEY}']"))
    with pytest.raises(FarmError, match=r"c\.yaml line \d+: .*interpolation is not allowed") as error:
        load_campaign(_campaign(tmp_path, body))
    assert "farm-test-secret" not in str(error.value)


def test_the_command_line_interpolates_only_when_the_operator_allows_it(monkeypatch):
    with pytest.raises(FarmError, match="interpolation is not allowed"):
        load_config(["prompt=${oc.env:HOME}"])
    monkeypatch.setenv("FARM_ALLOW_INTERPOLATION", "1")
    assert load_config(["prompt=${oc.env:HOME}"]).prompt == os.environ["HOME"]
    with pytest.raises(FarmError, match="interpolation is not allowed"):  # never from a campaign
        load_config(campaign=["prompt=${oc.env:HOME}"])


@pytest.mark.usefixtures("ray_cluster")
def test_a_campaign_run_writes_no_secret_of_the_environment_anywhere(tmp_path, capsys):
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]  # planted by the S3 test server, inherited by the Ray workers
    assert secret
    body = ("defaults: [output.size=64, output.pose_preview=false]\nshots:\n"
            + _shot("quoted", ", prompt: '${oc.env:AWS_SECRET_ACCESS_KEY}', rights: {license: '${oc.env:AWS_SECRET_ACCESS_KEY}'}"))
    out = tmp_path / "out"
    assert cli.run(["submit", str(_campaign(tmp_path, body)), "-o", str(out)]) == 0
    written = _files(out)
    assert "c/shots/quoted/video.mp4" in written and "c/report.html" in written and "c/campaign.parquet" in written
    leaked = [name for name, data in written.items() if secret.encode() in data]
    assert leaked == []
    manifest = json.loads(written["c/shots/quoted/manifest.json"])
    assert manifest["prompt"] == "${oc.env:AWS_SECRET_ACCESS_KEY}"  # data, recorded as written
    assert secret not in capsys.readouterr().err


# 2. Files the farm did not write ---------------------------------------------------------------------


def test_a_shot_id_naming_someone_elses_folder_is_refused_untouched(tmp_path, capsys):
    poses = tmp_path / "out" / "poses"
    poses.mkdir(parents=True)
    (poses / "driving.parquet").write_bytes(b"the user's own file")
    before = _files(poses)
    code = cli.run(["render", str(PLEASE), str(CROWN), "--character-skeleton", str(DRAWING["skeleton"]), "--character-mask",
                    str(DRAWING["mask"]), "--id", "poses", "-o", str(tmp_path / "out"), *SMALL])
    assert code == 2 and "the farm did not make" in capsys.readouterr().err
    assert _files(poses) == before


def test_a_failed_rerender_keeps_the_last_good_take(tmp_path):
    good = api.render(PLEASE, CROWN, out=tmp_path, overrides=SMALL, shot_id="take", **DRAWING)
    assert good.status == "succeeded"
    before = _files(tmp_path / "take")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    failed = api.render(PLEASE, CROWN, out=tmp_path, overrides=SMALL, shot_id="take", skeleton=DRAWING["skeleton"], mask=broken)
    assert failed.status == "failed"
    after = _files(tmp_path / "take")
    assert {k: v for k, v in after.items() if k != "failed.json"} == before  # the good video and manifest, byte for byte
    assert json.loads(after["failed.json"])["status"] == "failed"
    again = api.render(PLEASE, CROWN, out=tmp_path, overrides=SMALL, shot_id="take", **DRAWING)
    assert again.status == "reused" and again.video == good.video


def test_a_rerender_replaces_only_the_farms_own_files(tmp_path):
    first = api.render(PLEASE, CROWN, out=tmp_path, overrides=[*SMALL, "output.openpose_json=true"], shot_id="take", **DRAWING)
    assert first.status == "succeeded" and (tmp_path / "take" / "poses" / "openpose").is_dir()
    (tmp_path / "take" / "notes.txt").write_text("the user's notes")
    second = api.render(PLEASE, CROWN, out=tmp_path, overrides=SMALL, shot_id="take", **DRAWING)
    assert second.status == "succeeded" and second.manifest["content_key"] != first.manifest["content_key"]
    assert not (tmp_path / "take" / "poses" / "openpose").exists()  # the last take's files that this one has not
    assert (tmp_path / "take" / "notes.txt").read_text() == "the user's notes"
    assert not list((tmp_path / "take").glob(".take-*"))


def test_s3_a_prefix_the_farm_did_not_make_is_refused_and_a_failed_rerender_keeps_the_take(s3_bucket, s3_endpoint):
    store, bucket = s3_bucket
    store.put_bytes(b"someone's object", f"{bucket}/out/theirs/data.bin")
    endpoint = [f"storage.endpoint_url={s3_endpoint}", *SMALL]
    refused = api.render(PLEASE, CROWN, out=f"{bucket}/out", overrides=endpoint, shot_id="theirs", **DRAWING)
    assert refused.status == "failed" and "did not make" in refused.error
    assert store.list(f"{bucket}/out/theirs") == [f"{bucket}/out/theirs/data.bin"]
    good = api.render(PLEASE, CROWN, out=f"{bucket}/out", overrides=endpoint, shot_id="take", **DRAWING)
    assert good.status == "succeeded"
    video = store.get_bytes(f"{bucket}/out/take/video.mp4")
    failed = api.render(PLEASE, CROWN, out=f"{bucket}/out", overrides=endpoint, shot_id="take", skeleton=DRAWING["skeleton"],
                        mask=PLEASE)
    assert failed.status == "failed"
    assert store.get_bytes(f"{bucket}/out/take/video.mp4") == video
    assert json.loads(store.get_bytes(f"{bucket}/out/take/manifest.json"))["status"] == "succeeded"
    assert json.loads(store.get_bytes(f"{bucket}/out/take/failed.json"))["status"] == "failed"


# 3. Operator settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    ["runtime.address=ray://host:10001", "storage.endpoint_url=http://elsewhere:9000", "storage.roots=[]", "qa.max_side=100000",
     "qa.max_video_seconds=100000", "runtime.num_cpus=512", "storage=../../x", "backend.model=/etc", "backend.device=cuda",
     "hydra.run.dir=/tmp", "+runtime.x=1", "~qa", "notify.urls=[json://evil.example/x]", "cost.gpu_hour=0"],
)
def test_a_campaign_cannot_change_operator_settings(tmp_path, override):
    with pytest.raises(FarmError, match=r"c\.yaml line \d+: defaults") as error:
        load_campaign(_campaign(tmp_path, f"defaults: ['{override}']\nshots:\n{_shot()}"))
    assert "operator setting" in str(error.value) or "not a config name" in str(error.value) or "not a plain override" in str(error.value)


def test_a_window_above_the_operators_limit_is_refused(tmp_path):
    with pytest.raises(FarmError, match="window.length: 100000000 is above the farm's limit of 256"):
        api.check(_campaign(tmp_path, f"defaults: [window.length=100000000]\nshots:\n{_shot()}"))
    assert load_config(["qa.max_window_length=1000"], campaign=["window.length=1000"]).window.length == 1000  # the operator may


def test_render_keys_stay_open_to_campaigns(tmp_path):
    campaign = _campaign(tmp_path, "defaults: [match=video, output.size=256, window.length=32, pose.hands=false, prompt=hi, seed=3]\n"
                         f"shots:\n{_shot(extra=', overrides: [backend.grid_divisions=20, match.motion_weight=0.5]')}")
    ((_, cfg),) = api.check(campaign)
    assert (cfg.match.mode, cfg.output.size, cfg.window.length, cfg.seed, cfg.backend.grid_divisions) == ("video", 256, 32, 3, 20)


# 4. Limits ----------------------------------------------------------------------------------------------


def _clip(path: Path, fps: int, frames: int) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20 % 255, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(("fps", "frames", "limit", "problem"), [(10000, 20, [], "10000 frames per second, over the 240 fps limit"),
                                                                (25, 40, ["qa.max_frames=30"], "40 frames, over the 30-frame limit")])
def test_motion_over_the_limits_is_refused_from_the_probe(tmp_path, fps, frames, limit, problem):
    clip = _clip(tmp_path / "clip.mp4", fps, frames)
    result = api.render(clip, CROWN, out=tmp_path / "out", overrides=[*SMALL, *limit], **DRAWING)
    assert result.status == "failed" and problem in result.error and str(clip) in result.error
    assert "pose" not in result.manifest["timings"]  # refused before any decoding


def test_inputs_over_the_size_limit_are_refused_before_download(s3_bucket, tmp_path):
    store, bucket = s3_bucket
    store.put_file(PLEASE, f"{bucket}/in/please.mkv")
    size = PLEASE.stat().st_size
    with pytest.raises(FarmError, match=r"s3://.*/in/please\.mkv: is .* MB, above the farm's limit"):
        store.fetch(f"{bucket}/in/please.mkv", tmp_path / "cache", max_bytes=size - 1)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(FarmError, match="above the farm's limit"):
        store.fetch(str(PLEASE), tmp_path / "cache", max_bytes=size - 1)


def test_the_input_cache_evicts_the_least_recently_used(s3_bucket, tmp_path):
    store, bucket = s3_bucket
    for name in ("a", "b", "c"):
        store.put_bytes(name.encode() * 1000, f"{bucket}/in/{name}")
    cache = tmp_path / "cache"
    a = store.fetch(f"{bucket}/in/a", cache, cache_bytes=2500)
    b = store.fetch(f"{bucket}/in/b", cache, cache_bytes=2500)
    os.utime(a, (1, 1))
    os.utime(b, (2, 2))
    store.fetch(f"{bucket}/in/a", cache, cache_bytes=2500)  # used again: now the most recent
    c = store.fetch(f"{bucket}/in/c", cache, cache_bytes=2500)
    assert a.exists() and c.exists() and not b.exists()


# 5. Reports read from the store -------------------------------------------------------------------------


def test_farm_report_neither_writes_outside_nor_embeds_files_a_manifest_names(tmp_path, capsys):
    out = tmp_path / "out"
    shot = api.render(PLEASE, CROWN, out=out / "c" / "shots", overrides=SMALL, shot_id="ok", **DRAWING)
    assert shot.status == "succeeded"
    secret = tmp_path / "secret.png"
    secret.write_bytes((MEDIA / "childdrawing_char3_candycorn.png").read_bytes())
    manifest = json.loads((out / "c" / "shots" / "ok" / "manifest.json").read_text())
    manifest["inputs"]["character"]["uri"] = secret.as_uri()
    (out / "c" / "shots" / "ok" / "manifest.json").write_text(json.dumps(manifest))
    row = {"shot_id": "ok", "status": "succeeded"}
    doc = {"name": "c", "status": "finished", "counts": {}, "shots": [row, {"shot_id": "../../escaped", "status": "succeeded"}]}
    (out / "c" / "campaign.json").write_text(json.dumps(doc))
    assert cli.run(["report", str(out / "c")]) == 0
    assert "is not a valid id" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not any(tmp_path.glob("**/escaped*"))
    page = (out / "c" / "shots" / "ok" / "report.html").read_text()
    import base64
    assert base64.b64encode(secret.read_bytes()[:300])[:200].decode() not in page


# 6. Ids -------------------------------------------------------------------------------------------------


def test_shot_ids_take_no_trailing_newline():
    assert SHOT_ID.match("walk") and not SHOT_ID.match("walk\n")


def test_sweep_ids_never_collide(tmp_path):
    walk = MEDIA / "walk_two_people_toward_camera.gif"
    body = (f"shots:\n  - {{id: walk-2, motion: {walk}, character: {CROWN}}}\n  - {{motion: {walk}, character: {CROWN}}}\n"
            f"  - {{id: {'x' * 58}a, motion: {walk}, character: {CROWN}}}\n  - {{id: {'x' * 58}b, motion: {walk}, character: {CROWN}}}\n")
    plan = api.plan_sweep(_campaign(tmp_path, body), ["match.motion_weight=0.30000001,0.6000001"])
    ids = [shot.shot_id for shot, _ in plan.items]
    assert len(ids) == len(set(ids)) == 8 and all(SHOT_ID.match(i) for i in ids)


# 7. Rich markup in user text -----------------------------------------------------------------------------


def test_markup_in_paths_and_ids_is_printed_as_written(tmp_path, capsys):
    folder = tmp_path / "take[v2]" / "[/x]"
    folder.mkdir(parents=True)
    missing = folder / "take[v2].mp4"
    code = cli.run(["render", str(missing), str(CROWN), "-o", str(tmp_path / "[link=http://x]out"), *SMALL])
    err = capsys.readouterr().err
    assert code == 2 and "take[v2].mp4" in err and "[/x]" in err


# 8. Concurrent runs -------------------------------------------------------------------------------------


def test_a_second_run_on_a_held_output_stops_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    campaign = _campaign(tmp_path, f"defaults: [output.size=64]\nshots:\n{_shot()}")
    with Lease(Storage(), str(out / "c")):
        with pytest.raises(FarmError, match=rf"is being written by another run \({socket.gethostname()}:{os.getpid()}"):
            api.submit(campaign, out)
    assert not (out / "c" / LEASE).exists()


def test_a_lease_left_by_a_dead_process_is_taken_over(tmp_path):
    stale = {"holder": f"{socket.gethostname()}:999999999", "run": "x", "since": 0, "expires": 4e9}
    (tmp_path / LEASE).write_text(json.dumps(stale))
    with Lease(Storage(), str(tmp_path)) as lease:
        assert json.loads((tmp_path / LEASE).read_text())["run"] == lease.run


def test_s3_leases_are_taken_by_one_run_only(s3_bucket):
    store, bucket = s3_bucket
    won, tried = [], threading.Barrier(4)

    def take() -> None:
        try:
            with Lease(Storage(store.options), f"{bucket}/out/c"):
                won.append(True)
                tried.wait()  # the winner holds the lease until every run has tried
        except FarmError:
            won.append(False)
            tried.wait()

    runs = [threading.Thread(target=take) for _ in range(4)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert sorted(won) == [False, False, False, True]


def test_submit_folder_refuses_two_files_of_one_campaign(tmp_path, capsys):
    folder = tmp_path / "night"
    folder.mkdir()
    _campaign(folder, f"shots:\n{_shot()}", name="a").rename(folder / "one.yaml")
    _campaign(folder, f"shots:\n{_shot()}", name="a").rename(folder / "two.yaml")
    assert cli.run(["submit", str(folder), "-o", str(tmp_path / "out"), "--check"]) == 2
    assert "two.yaml" in capsys.readouterr().err


# 9. Errors name what the user gave -----------------------------------------------------------------------


def test_errors_name_the_input_as_given(s3_bucket, s3_endpoint, tmp_path):
    store, bucket = s3_bucket
    store.put_bytes(b"not a video at all", f"{bucket}/in/clip.mp4")
    result = api.render(f"{bucket}/in/clip.mp4", CROWN, out=tmp_path, overrides=[f"storage.endpoint_url={s3_endpoint}", *SMALL], **DRAWING)
    assert result.status == "failed" and f"{bucket}/in/clip.mp4" in result.error and ".cache" not in result.error


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_devices_and_pipes_are_not_files(tmp_path, kind):
    path = Path("/dev/zero") if kind == "device" else tmp_path / "pipe.mp4"
    if kind == "fifo":
        os.mkfifo(path)
    result = api.render(path, CROWN, out=tmp_path / "out", overrides=SMALL, **DRAWING)
    assert result.status == "failed" and "is not a regular file" in result.error


def test_no_person_names_the_video(tmp_path):
    empty = _clip(tmp_path / "nobody.mp4", 25, 10)
    result = api.render(empty, CROWN, out=tmp_path / "out", overrides=SMALL, **DRAWING)
    assert result.status == "failed" and f"motion video {empty}: no person was found" in result.error


# 10. Rights as people write them ---------------------------------------------------------------------------


def test_rights_take_yes_no_numbers_and_dates(tmp_path):
    body = f"shots:\n{_shot(extra=', rights: {consent: true, license: 2, motion_source: 2026-11-30}')}"
    (item,) = load_campaign(_campaign(tmp_path, body)).shots
    assert item.shot.rights == {"consent": True, "license": 2, "motion_source": "2026-11-30"}
    assert isinstance(Shot(PLEASE, CROWN, rights=item.shot.rights).rights["consent"], bool)


def test_storage_options_still_refuse_bad_endpoints():
    with pytest.raises(FarmError, match="not an http"):
        StorageOptions(endpoint_url="ftp://x")
