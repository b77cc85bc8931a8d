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
