"""S3 and S3-compatible object stores (MinIO, Ceph, R2) through boto3.

Credentials come from boto3's own chain (environment, shared files, instance or pod role); this
module never reads, stores or prints them. Transient faults (5xx, throttling, timeouts, resets) are
retried by botocore in "standard" mode; what is still failing after that, and every mistake a user
can make (missing bucket or object, no access, unreachable endpoint), becomes one FarmError line.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from s3transfer.subscribers import BaseSubscriber

from farm.errors import FarmError
from farm.storage.uri import S3Location

if TYPE_CHECKING:
    from farm.storage.options import StorageOptions

MIB = 1024 * 1024
CREDENTIALS_FIX = "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an instance role with access to the bucket"
_AUTH_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


class S3Store:
    """The S3 half of `Storage`. The boto3 client is made on first use and shared by threads."""

    def __init__(self, options: StorageOptions) -> None:
        self._options = options
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _make_client(self._options)
            return self._client

    # Objects ---------------------------------------------------------------------------------

    def head(self, location: S3Location, uri: str) -> dict:
        """The object's metadata (ETag, ContentLength); FarmError when it or its bucket is missing."""
        metadata = self.head_if_exists(location, uri)
        if metadata is None:
            raise _client_error(uri, location.bucket, "NoSuchKey", "", 404, 0)
        return metadata

    def head_if_exists(self, location: S3Location, uri: str) -> dict | None:
        """The object's metadata, or None when there is no such object (its bucket must exist)."""
        with self._errors(uri, location):
            try:
                return self.client.head_object(Bucket=location.bucket, Key=location.key)
            except ClientError as exc:
                if _code(exc) not in _NOT_FOUND_CODES:
                    raise
            # A HEAD 404 does not say whether the object or its bucket is missing; ask the bucket.
            try:
                self.client.head_bucket(Bucket=location.bucket)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND_CODES:
                    raise _client_error(uri, location.bucket, "NoSuchBucket", "", 404, 0) from exc
                raise
            return None

    def download(self, location: S3Location, uri: str, target: Path, size: int, etag: str) -> None:
        """Write the object into the file `target`, refusing any version but the one with `etag`."""
        # s3transfer sends If-Match only with ranged GETs, so downloads are always ranged (threshold
        # 1 byte); _KnownObject hands it the ETag and size and spares it a second HEAD.
        with self._errors(uri, location), self._transfers(threshold=1) as manager, target.open("wb") as out:
            manager.download(location.bucket, location.key, out, subscribers=[_KnownObject(size, etag)]).result()

    def upload(self, source: Path, location: S3Location, uri: str) -> None:
        """Upload a local file, in parts of `multipart_chunk_mb` once it reaches `multipart_threshold_mb`."""
        with self._errors(uri, location), self._transfers(threshold=self._options.multipart_threshold_mb * MIB) as manager:
            manager.upload(str(source), location.bucket, location.key).result()

    def put_bytes(self, data: bytes, location: S3Location, uri: str) -> None:
        with self._errors(uri, location):
            self.client.put_object(Bucket=location.bucket, Key=location.key, Body=data)

    def put_if_absent(self, data: bytes, location: S3Location, uri: str) -> bool:
        """Put the object only when the key is free (If-None-Match: *); False when it is taken."""
        with self._errors(uri, location):
            try:
                self.client.put_object(Bucket=location.bucket, Key=location.key, Body=data, IfNoneMatch="*")
                return True
            except ClientError as exc:
                if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    return False
                if _code(exc) not in ("NotImplemented", "501"):
                    raise
            # A store without conditional writes: look first (a race remains; the caller reads back).
            if self.head_if_exists(location, uri) is not None:
                return False
            self.client.put_object(Bucket=location.bucket, Key=location.key, Body=data)
            return True

    def get_bytes(self, location: S3Location, uri: str) -> bytes:
        with self._errors(uri, location):
            response = self.client.get_object(Bucket=location.bucket, Key=location.key)
            return response["Body"].read()

    # Prefixes --------------------------------------------------------------------------------

    def list_keys(self, location: S3Location, uri: str) -> list[str]:
        """Keys of every object under the folder `location` (recursive), folder markers included."""
        with self._errors(uri, location):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.folder)
            return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def delete_keys(self, location: S3Location, keys: list[str], uri: str) -> None:
        with self._errors(uri, location):
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = [{"Key": key} for key in keys[start : start + _DELETE_BATCH]]
                response = self.client.delete_objects(Bucket=location.bucket, Delete={"Objects": batch, "Quiet": True})
                for failed in response.get("Errors", []):
                    failed_uri = S3Location(location.bucket, failed["Key"]).uri
                    raise _client_error(failed_uri, location.bucket, failed.get("Code", ""), failed.get("Message", ""), None, 0)

    # Errors ----------------------------------------------------------------------------------

    @contextmanager
    def _errors(self, uri: str, location: S3Location) -> Iterator[None]:
        try:
            yield
        except FarmError:
            raise
        except Exception as exc:
            cause = _botocore_cause(exc)
            if cause is None:
                raise
            raise self._describe(cause, uri, location) from exc

    def _describe(self, exc: BaseException, uri: str, location: S3Location) -> FarmError:
        attempts = self._options.max_attempts
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return FarmError(uri, "no AWS credentials found", CREDENTIALS_FIX)
        if isinstance(exc, (ConnectionError, HTTPClientError)):
            return FarmError(
                uri,
                f"S3 endpoint {self.client.meta.endpoint_url} unreachable after {attempts} attempts ({type(exc).__name__})",
                "check storage endpoint_url (or AWS_ENDPOINT_URL) and the network",
            )
        if isinstance(exc, ParamValidationError):
            return FarmError(uri, f"invalid S3 request: {str(exc).splitlines()[-1].strip()}", "check the bucket name and key")
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return _client_error(uri, location.bucket, error.get("Code", ""), error.get("Message", ""), status, attempts)
        return FarmError(uri, f"S3 request failed: {type(exc).__name__}", "run again; if it persists, check the store")

    @contextmanager
    def _transfers(self, threshold: int) -> Iterator[Any]:
        """An s3transfer manager: objects of `threshold` bytes or more go in parts of multipart_chunk_mb."""
        config = TransferConfig(
            multipart_threshold=threshold,
            multipart_chunksize=self._options.multipart_chunk_mb * MIB,
            preferred_transfer_client="classic",
        )
        with create_transfer_manager(self.client, config) as manager:
            yield manager


class _KnownObject(BaseSubscriber):
    """Hands s3transfer the size and ETag we already have, so downloads are pinned to that version."""

    def __init__(self, size: int, etag: str) -> None:
        self._size = size
        self._etag = etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)
        future.meta.provide_object_etag(self._etag)


def _make_client(options: StorageOptions) -> Any:
    # total_max_attempts counts the first try; botocore's "max_attempts" key would count only the retries.
    config: dict[str, Any] = {"retries": {"total_max_attempts": options.max_attempts, "mode": "standard"}}
    if options.endpoint_url:
        # MinIO and Ceph serve buckets under the path unless set up with wildcard DNS.
        config["s3"] = {"addressing_style": "path"}
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=options.endpoint_url, region_name=options.region, config=Config(**config))


def _client_error(uri: str, bucket: str, code: str, message: str, status: int | None, attempts: int) -> FarmError:
    if code == "NoSuchBucket":
        return FarmError(uri, f"bucket {bucket} does not exist", "create the bucket or fix its name")
    if code in _NOT_FOUND_CODES:
        return FarmError(uri, "object not found", "check the key (list the folder to see what is there)")
    if code in _AUTH_CODES or status == 403:
        reason = code if code and not code.isdigit() else "HTTP 403"  # HEAD answers carry no error code
        return FarmError(uri, f"access denied ({reason})", CREDENTIALS_FIX)
    if code == "PreconditionFailed":
        return FarmError(uri, "object changed while it was being read", "run again")
    if status and (status >= 500 or status == 429):
        problem = f"S3 error {code or status} still failing after {attempts} attempts"
        return FarmError(uri, problem, "the store is failing or overloaded; run again later")
    return FarmError(uri, f"S3 error {code}: {message}".rstrip(": "), "check the URI and the store")


def _botocore_cause(exc: BaseException | None) -> BaseException | None:
    """The botocore error behind `exc`; s3transfer and boto3 wrap them in their own types."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (ClientError, BotoCoreError)):
            return exc
        exc = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
        seen += 1
    return None


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")
