"""Campaign files: many shots rendered as one batch (`jobs/*.yaml`).

    name: demo
    defaults: [output.size=512]          # Hydra overrides for every shot
    shots:
      - id: please-crown                 # optional; derived from the content when absent
        motion: media/gesture_asl_please.mkv     # relative paths are relative to this file
        character: media/childdrawing_char1.png
        skeleton: media/childdrawing_char1_skeleton.yaml   # optional
        mask: media/childdrawing_char1_mask.png             # optional
        prompt: ""                                           # optional
        overrides: [match=video]                             # optional, per shot
        rights: {motion_source: ..., character_source: ..., license: ..., consent: ...}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from farm.errors import FarmError
from farm.render import SHOT_ID, Shot

_SHOT_KEYS = {"id", "motion", "character", "skeleton", "mask", "prompt", "overrides", "rights"}


@dataclass
class CampaignShot:
    shot: Shot
    overrides: list[str] = field(default_factory=list)


@dataclass
class Campaign:
    name: str
    path: Path
    defaults: list[str]
    shots: list[CampaignShot]


def load_campaign(path: str | Path) -> Campaign:
    path = Path(path)
    if not path.is_file():
        raise FarmError(str(path), "campaign file not found", "check the path")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise FarmError(str(path), f"not valid YAML{where}", "fix the syntax") from None
    if not isinstance(doc, dict):
        raise FarmError(str(path), "a campaign must be a mapping with `name` and `shots`", "see jobs/demo.yaml")
    name = doc.get("name")
    if not isinstance(name, str) or not SHOT_ID.match(name):
        raise FarmError(f"{path}: name", f"{name!r} is not a valid campaign name", "use letters, digits, '-', '_' or '.'")
    defaults = _overrides(doc.get("defaults", []), f"{path}: defaults")
    shots = doc.get("shots")
    if not isinstance(shots, list) or not shots:
        raise FarmError(f"{path}: shots", "must be a non-empty list", "add at least one shot with motion and character")
    base = path.parent
    parsed = [_shot(entry, i, base, path) for i, entry in enumerate(shots)]
    ids = [s.shot.shot_id for s in parsed if s.shot.shot_id]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise FarmError(f"{path}: shots", f"duplicate shot ids {', '.join(duplicates)}", "give every shot its own id")
    return Campaign(name=name, path=path, defaults=defaults, shots=parsed)


def _shot(entry, i: int, base: Path, path: Path) -> CampaignShot:
    where = f"{path}: shots[{i}]"
    if not isinstance(entry, dict):
        raise FarmError(where, "each shot must be a mapping", "give at least `motion` and `character`")
    unknown = sorted(set(entry) - _SHOT_KEYS)
    if unknown:
        raise FarmError(f"{where}.{unknown[0]}", "unknown field", f"allowed fields: {', '.join(sorted(_SHOT_KEYS))}")
    for key in ("motion", "character"):
        if not isinstance(entry.get(key), str):
            raise FarmError(f"{where}.{key}", "missing or not a path", f"give the {key} file")
    shot_id = entry.get("id")
    if shot_id is not None and (not isinstance(shot_id, str) or not SHOT_ID.match(shot_id)):
        raise FarmError(f"{where}.id", f"{shot_id!r} is not a valid id", "use letters, digits, '-', '_' or '.'")
    rights = entry.get("rights", {})
    if not isinstance(rights, dict):
        raise FarmError(f"{where}.rights", "must be a mapping", "e.g. {license: CC-BY-4.0, consent: yes}")

    def resolve(key):
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise FarmError(f"{where}.{key}", "must be a path", "give a file path")
        return (base / value) if not Path(value).is_absolute() else Path(value)

    shot = Shot(
        motion=resolve("motion"), character=resolve("character"), skeleton=resolve("skeleton"), mask=resolve("mask"),
        prompt=str(entry.get("prompt") or ""), shot_id=shot_id, rights=rights,
    )
    return CampaignShot(shot, _overrides(entry.get("overrides", []), f"{where}.overrides"))


def _overrides(value, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FarmError(where, "must be a list of overrides like `match=video`", "fix the list")
    return value
