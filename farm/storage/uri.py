"""Storage URIs, parsed into typed locations. Pure: nothing here touches a disk or a network.

A URI is a local path (`clips/a.mp4`, `/data/a.mp4`), a `file://` URL (`file:///data/a.mp4`) or an
S3 object `s3://bucket/key`. Local forms parse to a `Path`; S3 forms to an `S3Location`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from farm.errors import FarmError

SUPPORTED = "a local path, file:///absolute/path or s3://bucket/key"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class S3Location:
    """An S3 object or prefix. `key` is "" for the bucket itself (only prefix operations take that)."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    @property
    def folder(self) -> str:
        """The key prefix of everything under this location taken as a folder ("" or ending in "/")."""
        return f"{self.key.rstrip('/')}/" if self.key.rstrip("/") else ""


def parse(uri: str | os.PathLike) -> Path | S3Location:
    """A URI as a local `Path` or an `S3Location`; FarmError for unsupported or malformed URIs."""
    text = os.fspath(uri)
    if not text:
        raise FarmError("''", "empty storage path", f"give {SUPPORTED}")
    scheme = _SCHEME.match(text)
    if scheme is None:
        return Path(text)
    name = scheme.group(1).lower()
    if name == "s3":
        return _s3_location(text)
    if name == "file":
        return _file_path(text)
    raise FarmError(text, f"unsupported URI scheme {name}://", f"use {SUPPORTED}")


def require_key(location: S3Location, uri: str) -> S3Location:
    """The location, if it names an object (bucket and key)."""
    if not location.key:
        raise FarmError(uri, "S3 URI has no object key", "write it as s3://bucket/key")
    return location


def is_remote(uri: str | os.PathLike) -> bool:
    return isinstance(parse(uri), S3Location)


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base` extended by relative `parts` ("a/b" counts as two segments).

    Refuses absolute parts, URIs and `..` segments, so a name taken from a campaign file cannot
    climb out of the base. Local results are plain path strings, S3 results `s3://` URIs.
    """
    segments = [segment for part in parts for segment in _relative_segments(part)]
    location = parse(base)
    if isinstance(location, S3Location):
        key = "/".join(s for s in (location.key.rstrip("/"), *segments) if s)
        return S3Location(location.bucket, key).uri
    return str(location.joinpath(*segments))


def _relative_segments(part: str) -> list[str]:
    if part.startswith("/") or _SCHEME.match(part):
        raise FarmError(part, "is absolute; only relative parts can be joined to a storage path", "pass a path relative to the base")
    segments = part.split("/")
    if ".." in segments:
        raise FarmError(part, "'..' is not allowed in a storage path", "name the file without '..'")
    return [s for s in segments if s not in ("", ".")]


def _s3_location(uri: str) -> S3Location:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise FarmError(uri, "S3 URI has no bucket", "write it as s3://bucket/key")
    return S3Location(bucket, key)


def _file_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise FarmError(uri, "file:// URI without an absolute path", "write it as file:///absolute/path")
    return Path(url2pathname(parts.path))
