"""The one door through which every input and output of the farm goes.

`Storage` takes URIs (see `farm.storage.uri`): local paths and `file://` URLs, or `s3://bucket/key`
on AWS or any S3-compatible store. Inputs are read with `fetch`, which checks local paths against
the allowed roots and caches S3 objects on local disk; outputs are written atomically on local disk
(temporary name, then rename) and as whole objects on S3, so no reader ever sees a partial file.
Every failure a user can cause is a one-line `FarmError` naming the URI.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import farm.storage.local as files
from farm.errors import FarmError
from farm.storage.options import StorageOptions
from farm.storage.s3 import S3Store
from farm.storage.uri import S3Location, is_remote, join, parse, require_key


class Storage:
    """Reads and writes local and S3 URIs. Picklable (the S3 client is made again on first use)."""

    def __init__(self, options: StorageOptions | None = None) -> None:
        self.options = options = options or StorageOptions()
        self._roots = tuple(Path(root).resolve() for root in options.roots)
        self._s3 = S3Store(options)

    def __reduce__(self):
        return (Storage, (self.options,))

    @property
    def s3_client(self):
        """The boto3 S3 client (made on first use), for event hooks and tests."""
        return self._s3.client

    # URIs ------------------------------------------------------------------------------------

    join = staticmethod(join)
    is_remote = staticmethod(is_remote)

    def local_path(self, uri: str) -> Path | None:
        """The Path of a local URI; None for S3."""
        location = parse(uri)
        return None if isinstance(location, S3Location) else location

    # Inputs ----------------------------------------------------------------------------------

    def fetch(self, uri: str, cache_dir: Path, *, max_bytes: int | None = None, cache_bytes: int | None = None) -> Path:
        """An input as a local file, at most `max_bytes` long (checked before any download).

        Local paths must lie inside the roots and be regular files; they are returned as given. S3
        objects are downloaded once into `cache_dir` under a name made from bucket, key and ETag,
        so a changed object is downloaded again and an unchanged one never is; with `cache_bytes`,
        the least recently used files of the cache go once it holds more.
        """
        location = parse(uri)
        if not isinstance(location, S3Location):
            files.check_roots(location, self._roots, uri)
            return files.require_file(location, uri, max_bytes)
        location = require_key(location, uri)
        head = self._s3.head(location, uri)
        if max_bytes is not None and head["ContentLength"] > max_bytes:
            raise FarmError(uri, f"is {head['ContentLength'] / 2**20:.1f} MB, above the farm's limit of {max_bytes / 2**20:.1f} MB",
                            "give a smaller file (the operator sets the limit with qa.max_input_mb)")
        cached = Path(cache_dir) / _cache_name(location, head["ETag"])
        if cached.is_file() and cached.stat().st_size == head["ContentLength"]:
            os.utime(cached, ns=(time.time_ns(), cached.stat().st_mtime_ns))  # recently used (atime): the last to be evicted
            return cached
        self._download(location, uri, cached, head)
        if cache_bytes is not None:
            files.evict_least_recent(Path(cache_dir), cache_bytes, keep=cached)
        return cached

    def get_bytes(self, uri: str) -> bytes:
        location = parse(uri)
        if isinstance(location, S3Location):
            return self._s3.get_bytes(require_key(location, uri), uri)
        return files.read_bytes(location, uri)

    def exists(self, uri: str) -> bool:
        """Whether a file (local) or an object (S3) is at `uri`; a missing bucket is an error."""
        location = parse(uri)
        if isinstance(location, S3Location):
            return self._s3.head_if_exists(require_key(location, uri), uri) is not None
        return location.is_file()

    # Outputs ---------------------------------------------------------------------------------

    def put_file(self, local: Path, uri: str) -> None:
        """Copy a local file to `uri`; S3 uploads go in parts from `multipart_threshold_mb` up."""
        location = parse(uri)
        if isinstance(location, S3Location):
            self._s3.upload(files.require_file(Path(local), local), require_key(location, uri), uri)
        else:
            files.copy_file(Path(local), location, uri)

    def put_bytes(self, data: bytes, uri: str) -> None:
        location = parse(uri)
        if isinstance(location, S3Location):
            self._s3.put_bytes(data, require_key(location, uri), uri)
        else:
            files.write_bytes(location, data, uri)

    def create(self, data: bytes, uri: str) -> bool:
        """Write `data` at `uri` only when nothing is there: True when this call made it. On S3 a
        conditional request (If-None-Match); a store that ignores it is caught by reading back."""
        location = parse(uri)
        if not isinstance(location, S3Location):
            return files.create_exclusive(location, data)
        location = require_key(location, uri)
        if not self._s3.put_if_absent(data, location, uri):
            return False
        return self._s3.get_bytes(location, uri) == data

    # Folders ---------------------------------------------------------------------------------

    def list(self, prefix_uri: str) -> list[str]:
        """URIs of every file under the folder `prefix_uri` (recursive), sorted.

        The prefix is a folder: "s3://b/x" lists "s3://b/x/..." but not "s3://b/xy". Local results
        are path strings; S3 folder markers (keys ending in "/") are left out.
        """
        location = parse(prefix_uri)
        if not isinstance(location, S3Location):
            return files.list_files(location)
        keys = self._s3.list_keys(location, prefix_uri)
        return sorted(S3Location(location.bucket, key).uri for key in keys if not key.endswith("/"))

    def delete(self, uri: str) -> None:
        """Delete one file or object; a missing one is nothing to delete."""
        location = parse(uri)
        if isinstance(location, S3Location):
            location = require_key(location, uri)
            self._s3.delete_keys(location, [location.key], uri)
        else:
            location.unlink(missing_ok=True)

    def delete_prefix(self, prefix_uri: str) -> None:
        """Delete everything under the folder `prefix_uri`; a missing folder is nothing to delete."""
        location = parse(prefix_uri)
        if not isinstance(location, S3Location):
            files.delete_folder(location, prefix_uri)
            return
        if not location.folder:
            raise FarmError(prefix_uri, "refusing to delete a whole bucket", "name a folder inside it (s3://bucket/folder)")
        self._s3.delete_keys(location, self._s3.list_keys(location, prefix_uri), prefix_uri)

    # Helpers ---------------------------------------------------------------------------------

    def _download(self, location: S3Location, uri: str, target: Path, head: dict) -> None:
        """Download to a temporary name next to `target`, then rename: a cache entry is whole or absent."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise files.os_error(str(target.parent), "create the cache folder", exc) from exc
        temp = files.temp_path(target)
        try:
            self._s3.download(location, uri, temp, head["ContentLength"], head["ETag"])
            os.replace(temp, target)
        except OSError as exc:
            raise files.os_error(str(target), "write", exc) from exc
        finally:
            temp.unlink(missing_ok=True)


def _cache_name(location: S3Location, etag: str) -> str:
    """`<digest>-<file name>`: the digest covers bucket, key and ETag; the name keeps the extension."""
    digest = hashlib.sha256(f"{location.uri}\n{etag}".encode()).hexdigest()[:24]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", location.key.rsplit("/", 1)[-1])[-80:]
    return f"{digest}-{name}"
