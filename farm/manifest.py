"""The production record of one shot (DESIGN §9), written last as the shot's commit marker."""
from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from farm._version import __version__
from farm.storage.local import write_bytes

SCHEMA_VERSION = 1

# Distributions whose versions every manifest records (name in the manifest -> pip distribution).
_VERSIONED = {
    "numpy": "numpy",
    "torch": "torch",
    "mediapipe": "mediapipe",
    "opencv": "opencv-contrib-python",
    "av": "av",
    "pyarrow": "pyarrow",
    "hydra": "hydra-core",
}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"farm": __version__, "python": platform.python_version()}
    for name, dist in _VERSIONED.items():
        try:
            found[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def window_cost(windows: list[dict], gpu_hour: float | None, cpu_hour: float | None) -> dict:
    """What the windows of a shot cost: generator seconds times the GPUs and CPU cores each held
    (a reused window cost nothing in this run), and money at the operator's hourly prices (None
    without a price). windows: the window logs of farm.shot.window.render_window."""
    gpu_seconds = sum(w.get("seconds", 0.0) * w.get("gpus", 0.0) for w in windows if not w.get("reused"))
    cpu_seconds = sum(w.get("seconds", 0.0) * w.get("cpus", 0.0) for w in windows if not w.get("reused"))
    return {"gpu_seconds": round(gpu_seconds, 3), "cpu_seconds": round(cpu_seconds, 3), "gpu_hour": gpu_hour,
            "cpu_hour": cpu_hour, "money": money(gpu_seconds, cpu_seconds, gpu_hour, cpu_hour)}


def money(gpu_seconds: float, cpu_seconds: float, gpu_hour: float | None, cpu_hour: float | None) -> float | None:
    """GPU- and CPU-seconds at hourly prices; None when neither price is given (an unpriced
    resource counts as free once the other is priced)."""
    if gpu_hour is None and cpu_hour is None:
        return None
    return round(gpu_seconds / 3600 * (gpu_hour or 0.0) + cpu_seconds / 3600 * (cpu_hour or 0.0), 6)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    text = json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n"
    write_bytes(Path(path), text.encode(), str(path))


def _jsonable(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot record {type(value).__name__} in a manifest")
