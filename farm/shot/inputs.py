"""Step 1 of a shot: its inputs fetched (s3:// into the cache), probed and hashed, and the content key."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from farm.backends.base import BackendSpec
from farm.config import FarmConfig
from farm.errors import FarmError
from farm.media.probe import VideoProbe, probe_image, probe_video, sha256_file
from farm.provenance.rights import is_url
from farm.shot.tools import cache_root
from farm.shot.types import Shot
from farm.storage import Storage


@dataclass
class LocalInputs:
    """The shot's input files on this machine."""

    motion: Path
    character: Path
    skeleton: Path | None
    mask: Path | None
    license: Path | None = None  # rights.license_file, when it is a file (a URL is only recorded)


def fetch_input(uri: str | Path, store: Storage, cfg: FarmConfig) -> Path:
    """One input as a local file, within the operator's limits: a local path is checked against
    storage.roots, an s3:// object is downloaded once into the input cache."""
    qa = cfg.qa
    return store.fetch(str(uri), cache_root(cfg) / "inputs", max_bytes=int(qa.max_input_mb * 2**20),
                       cache_bytes=int(qa.max_cache_mb * 2**20))


def probe_motion(path: Path, cfg: FarmConfig) -> VideoProbe:
    """A motion video's probe, refused over the operator's limits (qa.max_side, max_video_seconds,
    max_fps, max_frames)."""
    qa = cfg.qa
    return probe_video(path, max_side=qa.max_side, max_duration_s=qa.max_video_seconds, max_fps=qa.max_fps,
                       max_frames=qa.max_frames)


def fetch_inputs(shot: Shot, store: Storage, cfg: FarmConfig) -> LocalInputs:
    """The shot's inputs as local files (fetch_input)."""

    def fetch(value, name: str) -> Path | None:
        if value is None:
            return None
        try:
            return fetch_input(value, store, cfg)
        except FarmError as exc:
            if exc.problem == "file not found" and name in ("skeleton", "mask"):
                raise FarmError(exc.subject, f"{name} file not found", f"check the --character-{name} path") from None
            if exc.problem == "file not found" and name == "license_file":
                raise FarmError(f"rights.license_file {value}", "file not found", "check the licence file's path") from None
            raise

    return LocalInputs(
        motion=fetch(shot.motion, "motion"), character=fetch(shot.character, "character"),
        skeleton=fetch(shot.skeleton, "skeleton"), mask=fetch(shot.mask, "mask"),
        license=fetch(license_file(shot), "license_file"),
    )


def license_file(shot: Shot) -> str | None:
    """The shot's licence document as a path or storage URI; None when there is none or it is a URL."""
    value = shot.rights.get("license_file")
    return None if value is None or is_url(value) else str(value)


def probe_inputs(shot: Shot, local: LocalInputs, cfg: FarmConfig) -> tuple[dict, VideoProbe]:
    """The `inputs` of the manifest (uri, sha256, bytes, probe per input) and the motion's probe.
    Errors name each input as the user gave it (an s3:// URI, not its file in the cache)."""
    qa = cfg.qa
    with as_given({local.motion: _given_motion(shot)}):
        motion = probe_motion(local.motion, cfg)
    with as_given({local.character: shot.character}):
        image = probe_image(local.character, max_side=qa.max_side)
    inputs = {
        "motion": _input_record(local.motion, motion, shot.motion),
        "character": _input_record(local.character, image, shot.character),
    }
    if shot.library is not None:
        inputs["motion"]["library"] = shot.library
    for name in ("skeleton", "mask"):
        if getattr(local, name) is not None:
            inputs[name] = _input_record(getattr(local, name), None, getattr(shot, name))
    if local.license is not None:
        inputs["license_file"] = _input_record(local.license, None, license_file(shot))
    return inputs, motion


def _given_motion(shot: Shot) -> str | Path:
    return f"library:{shot.library} ({shot.motion})" if shot.library is not None else shot.motion


@contextmanager
def as_given(copies: dict) -> Iterator[None]:
    """Errors about the local copy of an input (local path -> the input as given) name the input
    as the user gave it: an s3:// URI, not its file in the cache."""
    try:
        yield
    except FarmError as exc:
        for local, given in copies.items():
            if local is not None and str(given) != str(local) and exc.subject.startswith(str(local)):
                raise type(exc)(str(given) + exc.subject[len(str(local)):], exc.problem, exc.fix) from None
        raise


def _input_record(path: Path, probe, given) -> dict:
    """given: the input as the user named it (an s3:// URI is recorded as such)."""
    path = Path(path)
    return {
        "uri": str(given) if Storage.is_remote(str(given)) else path.resolve().as_uri(),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "probe": probe.to_dict() if probe is not None else None,
    }


def content_key(inputs: dict, shot: Shot, cfg: FarmConfig, spec: BackendSpec) -> str:
    """Hash of everything that makes the shot: input bytes, prompt, rights, config, backend. Not the
    config of where it is stored, how the cluster runs, what QA checks, who is told and what an
    hour costs (qa.*, storage.*, runtime.*, notify.*, cost.*): a new threshold or endpoint must not
    re-render finished shots (a reused shot's verdict is worked out again under the thresholds of
    the run, see outcome.reuse_verdict). Of
    provenance.*, what changes the video's bytes: the watermark and whether it is signed (not the
    key's path, what a verify trusts or the rights gate)."""
    operator = ("qa", "storage", "runtime", "provenance", "notify", "cost")
    config = {k: v for k, v in cfg.to_dict().items() if k not in operator}
    key = {
        "inputs": {name: item["sha256"] for name, item in inputs.items()},
        "prompt": shot.prompt,
        "rights": shot.rights,
        "config": config,
        "provenance": {"watermark": cfg.provenance.watermark, "sign": cfg.provenance.sign},
        "backend": [spec.name, spec.version],
    }
    # A video shown turned (a phone's display rotation): shots made before frames were turned upright
    # read it sideways, so its key differs from theirs; every other shot keeps its key.
    turned = {name: item["probe"]["rotation"] for name, item in inputs.items() if (item.get("probe") or {}).get("rotation")}
    if turned:
        key["rotation"] = turned
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def fallback_id(shot: Shot, cfg: FarmConfig | None) -> str:
    """Id for a shot whose inputs cannot even be hashed (missing file): from names and config."""
    key = json.dumps([str(shot.motion), str(shot.character), cfg.to_dict() if cfg else None], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]
