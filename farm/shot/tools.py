"""What the stages of a shot work with: its store and staging folder, its backend, its pose options."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
from pathlib import Path

from farm.backends.base import Backend, BackendSpec
from farm.config import FarmConfig
from farm.errors import FarmError
from farm.pose.extract import LandmarkOptions, PoseOptions
from farm.storage import Storage, StorageOptions


def storage_for(cfg: FarmConfig) -> Storage:
    """The store for a config; one per distinct storage config in a process (its S3 client is reused)."""
    s = cfg.storage
    return _storage(StorageOptions(
        endpoint_url=s.endpoint_url, region=s.region, max_attempts=s.max_attempts,
        multipart_threshold_mb=s.multipart_threshold_mb, multipart_chunk_mb=s.multipart_chunk_mb, roots=tuple(s.roots),
    ))


@functools.lru_cache(maxsize=8)
def _storage(options: StorageOptions) -> Storage:
    return Storage(options)


def cache_root(cfg: FarmConfig | None) -> Path:
    configured = cfg.storage.cache_dir if cfg is not None else None
    return Path(configured or Path.home() / ".cache" / "motion-farm")


def stage_root(out_root: Path | str, cfg: FarmConfig | None) -> Path:
    """Where a shot's files are made: the output folder itself when it is local; for an s3:// output,
    a local staging folder whose finished files are then uploaded (manifest last)."""
    location = str(out_root)
    if not Storage.is_remote(location):
        return Path(Storage().local_path(location))
    return cache_root(cfg) / "stage" / hashlib.sha256(location.encode()).hexdigest()[:16]


def backend_class(cfg: FarmConfig) -> type:
    """The backend class a config names; its `spec` is known without loading any model."""
    if cfg.backend.name == "puppet":
        from farm.backends.puppet import PuppetBackend

        return PuppetBackend
    if cfg.backend.name == "wan_animate":
        from farm.backends.wan_animate import WanAnimateBackend

        return WanAnimateBackend
    if cfg.backend.name == "simulated":
        from farm.backends.simulated import SimulatedBackend

        return SimulatedBackend
    raise FarmError("config backend.name", f"unknown backend {cfg.backend.name!r}", "use puppet, wan_animate or simulated")


def backend_spec(cfg: FarmConfig) -> BackendSpec:
    """What the configured backend needs (its GPUs, window rule), without loading its model."""
    cls = backend_class(cfg)
    return cls.spec_for(**_backend_options(cfg)) if hasattr(cls, "spec_for") else cls.spec


def make_backend(cfg: FarmConfig) -> Backend:
    """The configured backend, loaded (its model too), inside runtime.backend_wrapper when one is set."""
    backend = backend_class(cfg)(**_backend_options(cfg))
    if cfg.runtime.backend_wrapper is None:
        return backend
    target = cfg.runtime.backend_wrapper
    module, _, name = target.partition(":")
    try:
        wrap = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise FarmError(f"config runtime.backend_wrapper {target}", f"cannot be imported ({exc})",
                        "give it as package.module:function, importable on every node that renders windows") from None
    wrapped = wrap(backend)
    spec = getattr(wrapped, "spec", None)
    # The driver schedules by the configured backend's spec; a wrapper may only make it sample
    # (deterministic=False: a seed then changes its frames, and re-takes are worth making).
    if not isinstance(spec, BackendSpec) or dataclasses.replace(spec, deterministic=backend.spec.deterministic) != backend.spec:
        raise FarmError(f"config runtime.backend_wrapper {target}", "returned a backend with another spec",
                        "return an object with the wrapped backend's spec (only `deterministic` may differ), prepare and render_window")
    return wrapped


def _backend_options(cfg: FarmConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg.backend).items() if k != "name"}


def pose_options(cfg: FarmConfig) -> PoseOptions:
    """The pose config (less the model name) and motion.subject as the options extract_poses takes."""
    return PoseOptions(**{f.name: getattr(cfg.pose, f.name) for f in dataclasses.fields(LandmarkOptions)},
                       subject=cfg.motion.subject)


def shot_pose_options(cfg: FarmConfig, spec: BackendSpec) -> PoseOptions:
    """pose_options with only the parts a shot uses: those its backend reads (spec.pose_parts),
    and hands and face for output.openpose_json (OpenPose files have them). pose.hands and
    pose.face allow a part, they do not force it: hands the backend never reads are not tracked
    (the body alone runs mediapipe Pose, more than twice as fast as Holistic), and pose.hands=false
    leaves them out even for a backend that reads them."""
    options = pose_options(cfg)
    used = set(spec.pose_parts) | ({"hands", "face"} if cfg.output.openpose_json else set())
    return dataclasses.replace(options, hands=options.hands and "hands" in used, face=options.face and "face" in used)
