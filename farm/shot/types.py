"""What a shot is (`Shot`), how its progress is told (`Reporter`), and the names of its files."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

VIDEO = "video.mp4"
MANIFEST = "manifest.json"
PREVIEW = "pose_preview.mp4"
WINDOWS = "windows"
SEGMENTS = "segments"
QA_TABLE = "qa.parquet"
REPORT = "report.html"
LICENSE_DIR = "rights"  # the shot's licence document (rights.license_file), copied beside its video
QA_SUFFIX = ".qa.npz"  # next to each segment: what QA measured on its frames
ARTIFACTS = "artifacts"  # published files made before the finish, on another worker (the pose preview)
WORK = (WINDOWS, SEGMENTS, ARTIFACTS)  # working files of a shot: kept until its manifest is committed, never published
FAILED = "failed.json"  # the record of a failed render, beside the last good take it did not replace
MARKER = ".farm-shot"  # the farm made this folder: the farm may write (and replace its own files) here
TAKE = ".take-"  # a take is made in <shot>/.take-<run>/ and moved into place when committed


@dataclass
class Shot:
    """What to render. Inputs are local paths, file:// or s3:// URIs (read through farm.storage);
    `shot_id` is derived from the content when not given."""

    motion: Path | str
    character: Path | str
    skeleton: Path | str | None = None
    mask: Path | str | None = None
    prompt: str = ""
    shot_id: str | None = None
    rights: dict = field(default_factory=dict)
    library: str | None = None  # the motion library's name of `motion`, when the campaign said library:NAME


class Reporter(Protocol):
    def stage(self, name: str, total: int | None = None) -> None: ...
    def advance(self, n: int = 1) -> None: ...


class Silent:
    """A Reporter that tells nobody."""

    def stage(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def progress_callback(reporter: Reporter):
    """A `progress(frames_done)` function that advances the reporter by the difference."""
    done = [0]

    def update(n: int) -> None:
        reporter.advance(n - done[0])
        done[0] = n

    return update


@contextmanager
def timed(timings: dict, name: str):
    """Add the seconds the block takes to timings[name]."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
