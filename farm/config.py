"""One typed, validated configuration object, composed by Hydra from `conf/` (see _conf_dir).

`load_config(overrides)` composes `conf/config.yaml` with Hydra override syntax
(`match=video`, `output.size=720`), checks every key and type against the dataclasses below, checks
value ranges, and returns a `FarmConfig`. Anything wrong is a `FarmError` naming the key and the fix.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from farm.errors import FarmError
from farm.pose.extract import LandmarkOptions
from farm.pose.subject import parse_subject


def _conf_dir() -> Path:
    """The folder of the Hydra configs: farm/conf/ in an installed wheel, else the checkout's conf/.

    conf/ at the top of the source tree is the only copy in git; pyproject.toml maps it into the
    wheel as the package data farm/conf/. A checkout (editable install, or PYTHONPATH=<checkout> as
    pytest and Ray workers use it) has no farm/conf/, so it reads <checkout>/conf, and edits to conf/
    take effect without reinstalling. Either way it is a plain folder on disk (wheels install
    unpacked), so Hydra reads it with initialize_config_dir. The `pkg://farm.conf` search path would
    need farm.conf importable, which it is not from a checkout on PYTHONPATH (conf/ is outside farm/).
    """
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    return installed if (installed / "config.yaml").is_file() else package.parent / "conf"


CONF_DIR = _conf_dir()


@dataclass
class PuppetConfig:
    name: str = "puppet"
    grid_divisions: int = 40
    deformer: str = "lbs"


@dataclass
class WanAnimateConfig:
    name: str = "wan_animate"
    model: str = ""  # a local diffusers folder or a Hugging Face hub id
    revision: str | None = None
    local_files_only: bool | None = None  # None: as HF_HUB_OFFLINE says
    dtype: str = "bf16"
    device: str = "auto"
    cpu_offload: bool = False
    vae_tiling: bool = False
    resolution_area: int = 1280 * 720
    steps: int = 20
    guidance: float = 1.0
    negative_prompt: str = ""
    condition_frames: int = 1


@dataclass
class SimulatedConfig:
    name: str = "simulated"
    seconds_per_frame: float = 2.805
    load_seconds: float = 60.0


BACKEND_SCHEMAS: dict[str, type] = {"puppet": PuppetConfig, "wan_animate": WanAnimateConfig, "simulated": SimulatedConfig}


@dataclass
class PoseConfig(LandmarkOptions):
    """The pose stage's options (farm.pose.extract.LandmarkOptions) and which model runs it."""

    model: str = "mediapipe"


@dataclass
class MotionConfig:
    """subject: which person of the motion video performs (farm.pose.subject.parse_subject:
    largest, left, right, centre, or an index from the left at the first frame); None: the most
    prominent one."""

    subject: str | None = None


@dataclass
class MatchConfig:
    mode: str = "image"
    motion_weight: float = 1.0
    anchor: str = "auto"


@dataclass
class WindowConfig:
    length: int | None = None
    overlap: int | None = None
    blend: str = "linear"
    colour: str = "lab"
    mode: str | None = None  # None: the backend's own (BackendSpec.window_mode)
    chains: int = 1


@dataclass
class OutputConfig:
    size: int = 512
    fps: float | None = None
    crf: int = 18
    preset: str = "veryfast"
    keep_audio: bool = True
    pose_preview: bool = True
    openpose_json: bool = False
    segment_frames: int = 240


@dataclass
class StorageConfig:
    roots: list[str] = field(default_factory=list)
    endpoint_url: str | None = None
    region: str | None = None
    max_attempts: int = 5
    multipart_threshold_mb: int = 16
    multipart_chunk_mb: int = 8
    cache_dir: str | None = None


@dataclass
class RuntimeConfig:
    kind: str = "local"
    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    max_retries: int = 3
    max_shots_in_flight: int | None = None
    pose_chunk_frames: int = 300
    window_timeout_s: float | None = None
    bad_node_failures: int = 3
    backend_wrapper: str | None = None  # "package.module:function", backend -> the backend the farm uses
    stream: bool = True  # farm render: the stages of a shot overlap (farm.shot.render); false: one after the other


@dataclass
class QAConfig:
    strict: bool = False
    max_video_seconds: float = 600.0
    max_side: int = 8192
    # Input and work limits (operator-only, DESIGN §12): refused from the probe, before decoding.
    max_fps: float = 240.0
    max_frames: int = 36000
    max_window_length: int = 256
    max_input_mb: float = 4096.0
    max_cache_mb: float = 20480.0  # the S3 input cache; least recently used files go first
    # Re-render thresholds (farm.qa.measure.verdict); None turns one off.
    min_pose_pck: float | None = 0.5
    min_pose_oks: float | None = None
    min_joint_pck: float | None = 0.5
    min_pose_detected: float | None = 0.5
    max_jitter: float | None = 0.1
    max_appearance_drift: float | None = 0.5
    min_appearance_ssim: float | None = None
    max_seam_score: float | None = 1.5
    max_overlap_overhead: float | None = None
    # Automatic re-takes (farm.qa.window), operator-only: they spend GPU time.
    retakes: int = 0  # windows of a shot rendered again with the next seed when they fail a window check
    abort_below: float | None = None  # a window whose pose_pck (after its re-takes) is below this stops its shot


@dataclass
class ProvenanceConfig:
    """Operator-only (DESIGN §12): the signing key, what a verify trusts, the rights gate."""

    watermark: bool = True
    sign: bool = False
    cert: str | None = None
    key: str | None = None
    signer: str | None = None  # "package.module:function", bytes -> signature (KMS/HSM)
    tsa_url: str | None = None
    trust: str | None = None
    rights_required: bool = False


@dataclass
class NotifyConfig:
    """Operator-only (DESIGN §12): where the end of every campaign run is announced, as apprise URLs
    (they hold tokens: never recorded in a manifest)."""

    urls: list[str] = field(default_factory=list)


@dataclass
class CostConfig:
    """Operator-only (DESIGN §12): the price of an hour of one GPU and of one CPU core; None shows
    no money, only GPU- and CPU-seconds."""

    gpu_hour: float | None = None
    cpu_hour: float | None = None


@dataclass
class FarmConfig:
    backend: Any = None  # one of BACKEND_SCHEMAS, chosen by backend.name
    pose: PoseConfig = field(default_factory=PoseConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    prompt: str = ""
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# Allowed values of the string options, checked after composition.
CHOICES: dict[str, tuple[str, ...]] = {
    "pose.model": ("mediapipe",),
    "match.mode": ("image", "video"),
    "match.anchor": ("auto", "feet", "neck"),
    "window.blend": ("linear", "cosine"),
    "window.colour": ("lab", "none"),
    "window.mode": ("parallel", "chained"),
    "output.preset": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"),
    "runtime.kind": ("local",),
    "backend.deformer": ("lbs",),
    "backend.dtype": ("bf16", "fp16", "fp32"),
    "backend.device": ("auto", "cuda", "cpu"),
}

# (min, max) inclusive ranges of numeric options; None is open.
SEED_MAX = 2**63 - 1  # numpy and torch generators take seeds in [0, 2**64); 63 bits keep a seed an int64 in Parquet
RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, SEED_MAX),
    "match.motion_weight": (0.0, 1.0),
    "output.size": (64, 4096),
    "output.fps": (1.0, 120.0),
    "output.crf": (0, 51),
    "output.segment_frames": (0, None),
    "window.length": (2, None),
    "window.overlap": (0, None),
    "window.chains": (1, None),
    "pose.warmup_frames": (0, 300),
    "pose.min_detection_confidence": (0.0, 1.0),
    "pose.min_tracking_confidence": (0.0, 1.0),
    "qa.max_video_seconds": (1.0, None),
    "qa.max_side": (64, None),
    "qa.max_fps": (1.0, None),
    "qa.max_frames": (1, None),
    "qa.max_window_length": (2, None),
    "qa.max_input_mb": (0.001, None),
    "qa.max_cache_mb": (1.0, None),
    "qa.min_pose_pck": (0.0, 1.0),
    "qa.min_pose_oks": (0.0, 1.0),
    "qa.min_joint_pck": (0.0, 1.0),
    "qa.min_pose_detected": (0.0, 1.0),
    "qa.max_jitter": (0.0, None),
    "qa.max_appearance_drift": (0.0, 1.0),
    "qa.min_appearance_ssim": (-1.0, 1.0),
    "qa.max_seam_score": (1.0, None),
    "qa.max_overlap_overhead": (0.0, None),
    "qa.retakes": (0, 100),
    "qa.abort_below": (0.0, 1.0),
    "runtime.num_cpus": (1, None),
    "runtime.num_gpus": (0, None),
    "runtime.max_retries": (0, 20),
    "runtime.max_shots_in_flight": (1, None),
    "runtime.pose_chunk_frames": (10, None),
    "runtime.window_timeout_s": (1.0, None),
    "runtime.bad_node_failures": (0, 1000),
    "backend.grid_divisions": (4, 400),
    "backend.resolution_area": (64 * 64, 4096 * 4096),
    "backend.steps": (1, 1000),
    "backend.guidance": (0.0, 50.0),
    "backend.condition_frames": (1, 9),
    "cost.gpu_hour": (0.0, None),
    "cost.cpu_hour": (0.0, None),
    "backend.seconds_per_frame": (0.0, 3600.0),
    "backend.load_seconds": (0.0, 3600.0),
}


# DESIGN §12, the trust boundary. Campaign files and shot rows are other people's data, run with the
# operator's credentials: they may set render keys only. Everything else (runtime.*, storage.*,
# qa.* limits, provenance.* (signing key, trust, rights gate), notify.*, cost.*, and the backend keys that choose what
# is loaded, from where and on which device) comes from the operator: the command line or the environment.
CONFIG_GROUPS = ("backend", "pose", "motion", "match", "window", "output", "storage", "runtime", "qa", "provenance", "notify",
                 "cost")
CAMPAIGN_KEYS = ("prompt", "seed", "backend", "pose", "motion", "motion.*", "match", "match.*", "window.*", "output.*", "pose.*",
                 "backend.*",
                 # QA's judgement of a shot, not the farm's limits: a campaign may be stricter or looser
                 "qa.strict", "qa.min_pose_pck", "qa.min_pose_oks", "qa.min_joint_pck", "qa.min_pose_detected", "qa.max_jitter",
                 "qa.max_appearance_drift", "qa.min_appearance_ssim", "qa.max_seam_score", "qa.max_overlap_overhead")
OPERATOR_BACKEND_KEYS = ("backend.model", "backend.revision", "backend.local_files_only", "backend.device",
                         "backend.cpu_offload", "backend.vae_tiling",
                         # what a simulated GPU costs: a campaign could otherwise hold the farm's GPUs for hours
                         "backend.seconds_per_frame", "backend.load_seconds")
# The operator may allow `${…}` interpolation in their own command-line overrides (never in a campaign's).
ALLOW_INTERPOLATION_ENV = "FARM_ALLOW_INTERPOLATION"
_OVERRIDE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(?P<value>.*)\Z", re.S)
_GROUP_VALUE = re.compile(r"^[A-Za-z0-9_]+\Z")


def check_override(override: str, *, campaign: bool, where: str = "") -> None:
    """Refuse an override that crosses the trust boundary. campaign: it comes from a campaign file
    or a shot row (render keys only, plain `key=value`); else from the operator. Neither may name
    a config group by a path, and `${…}` interpolation (which reads the environment, e.g. the S3
    secret) is refused unless the operator allows it for their own overrides."""
    subject = where or f"config override {override!r}"
    match = _OVERRIDE.match(override)
    if match is None:
        if campaign:
            raise FarmError(subject, f"{override!r} is not a plain override", "write it as key=value, e.g. match=video")
        return  # Hydra parses (and refuses) the operator's own syntax
    key, value = match["key"], match["value"]
    if "${" in value and (campaign or os.environ.get(ALLOW_INTERPOLATION_ENV) != "1"):
        allow = "" if campaign else f" (or set {ALLOW_INTERPOLATION_ENV}=1 to allow it on the command line)"
        raise FarmError(subject, f"{key}: ${{…}} interpolation is not allowed here", "write the value itself" + allow)
    if key in CONFIG_GROUPS and not _GROUP_VALUE.match(value):
        raise FarmError(subject, f"{key}: {value!r} is not a config name", f"name one of the files of conf/{key}/, without a path")
    if campaign and not _campaign_may_set(key):
        raise FarmError(subject, f"{key} is an operator setting: a campaign cannot set it",
                        "set it on the farm's command line or environment, or remove it from the campaign")


def _campaign_may_set(key: str) -> bool:
    if key in OPERATOR_BACKEND_KEYS:
        return False
    return any(key == allowed or (allowed.endswith(".*") and key.startswith(allowed[:-1])) for allowed in CAMPAIGN_KEYS)


def load_config(overrides: list[str] | tuple[str, ...] = (), *, campaign: list[str] | tuple[str, ...] = ()) -> FarmConfig:
    """Compose conf/ with Hydra overrides and return the validated config. campaign: the overrides
    a campaign file gives (render keys only), applied before the operator's `overrides`."""
    for override in campaign:
        check_override(override, campaign=True)
    for override in overrides:
        check_override(override, campaign=False)
    raw = _compose([*campaign, *overrides])
    return validate(raw)


def _compose(overrides: list[str]) -> Any:
    if not (CONF_DIR / "config.yaml").is_file():
        raise FarmError("config", f"no config.yaml in {CONF_DIR}", "reinstall motion-farm, or run it from its source checkout")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        unknown = re.match(r"Could not override '([^']+)'", str(exc))
        if unknown:
            raise FarmError(
                f"config {unknown.group(1)}", "unknown key", "see the keys of each group under conf/ and in README"
            ) from None
        raise FarmError("config", _first_line(exc), "see the groups under conf/ and in README") from None


def validate(raw: Any) -> FarmConfig:
    """Check a composed config against the schema; return it as typed dataclasses."""
    data = OmegaConf.to_container(raw, resolve=True) if not isinstance(raw, dict) else dict(raw)
    backend = data.pop("backend", None) or {}
    name = backend.get("name")
    if name not in BACKEND_SCHEMAS:
        raise FarmError("config backend.name", f"unknown backend {name!r}", f"use one of {sorted(BACKEND_SCHEMAS)}")
    typed = _typed(FarmConfig, data, "")
    typed.backend = _typed(BACKEND_SCHEMAS[name], backend, "backend.")
    _check_values(typed)
    return typed


def _typed(schema: type, data: dict, prefix: str) -> Any:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), data)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        raise FarmError(
            f"config {prefix}{key}".rstrip(),
            _first_line(exc),
            "remove the key or fix its type (see the group files under conf/)",
        ) from None


def _check_values(cfg: FarmConfig) -> None:
    flat = _flatten(cfg.to_dict())
    # Backend keys exist only for the backend that has them.
    for key, allowed in CHOICES.items():
        if flat.get(key) is not None and flat[key] not in allowed:
            raise FarmError(f"config {key}", f"{flat[key]!r} is not allowed", f"use one of {', '.join(allowed)}")
    for key, (low, high) in RANGES.items():
        value = flat.get(key)
        if value is None:
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            raise FarmError(f"config {key}", f"{value} is out of range", f"use a value in {bounds}")
    if cfg.window.length is not None and cfg.window.overlap is not None and cfg.window.overlap >= cfg.window.length:
        raise FarmError("config window.overlap", "must be smaller than window.length", "lower window.overlap")
    parse_subject(cfg.motion.subject)
    _check_signing(cfg.provenance)
    if cfg.window.length is not None and cfg.window.length > cfg.qa.max_window_length:
        raise FarmError("config window.length", f"{cfg.window.length} is above the farm's limit of {cfg.qa.max_window_length} frames",
                        "use a shorter window (the operator sets the limit with qa.max_window_length)")


def _check_signing(provenance: ProvenanceConfig) -> None:
    """Signing needs a certificate and one way to sign with its key (the files themselves are read
    by farm.provenance.credentials.load_signer before a shot starts)."""
    if not provenance.sign:
        return
    how = "give the certificate chain and key: provenance.cert=chain.pem provenance.key=key.pem, or set provenance.sign=false"
    if not provenance.cert:
        raise FarmError("config provenance.cert", "provenance.sign=true needs the signing certificate", how)
    if not provenance.key and not provenance.signer:
        raise FarmError("config provenance.key", "provenance.sign=true needs the certificate's key (or provenance.signer)", how)
    if provenance.key and provenance.signer:
        raise FarmError("config provenance.signer", "both provenance.key and provenance.signer are set", "sign with one of them")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
