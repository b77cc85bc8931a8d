"""How the store reaches S3 and which local folders inputs may come from (the settings of `storage.*`)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from farm.errors import FarmError

MIN_PART_MB = 5  # S3 refuses multipart parts smaller than 5 MiB (all but the last)


@dataclass(frozen=True)
class StorageOptions:
    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, Ceph, R2); None: boto3's chain (AWS_ENDPOINT_URL)
    region: str | None = None
    max_attempts: int = 5  # botocore "standard" retries of 5xx, throttling, timeouts and resets
    multipart_threshold_mb: int = 16
    multipart_chunk_mb: int = 8
    roots: tuple[str, ...] = ()  # local folders inputs may be read from; empty: anywhere

    def __post_init__(self) -> None:
        if self.endpoint_url is not None and not re.match(r"^https?://[^/]", self.endpoint_url):
            raise FarmError("storage.endpoint_url", f"{self.endpoint_url!r} is not an http(s) URL", "write it as http(s)://host[:port]")
        if self.max_attempts < 1:
            raise FarmError("storage.max_attempts", f"{self.max_attempts} is out of range", "use 1 or more (1: no retries)")
        if self.multipart_threshold_mb < 1:
            raise FarmError("storage.multipart_threshold_mb", f"{self.multipart_threshold_mb} is out of range", "use 1 or more")
        if self.multipart_chunk_mb < MIN_PART_MB:
            problem = f"{self.multipart_chunk_mb} is below S3's {MIN_PART_MB} MiB part minimum"
            raise FarmError("storage.multipart_chunk_mb", problem, f"use {MIN_PART_MB} or more")
