"""Every character image we have, rendered as a new user would (no skeleton, no mask given), with
one contact sheet per character to check by eye; not a test (it takes minutes), a survey:

    .venv/bin/python -m tests.characters_sheet OUT [--motion VIDEO] [--size PX] [--only NAME ...]

Prints one row per character (status, skeleton source, mask method, detection view, PCK, drift,
QA verdict or the refusal), writes OUT/characters.json, and OUT/<character>.png: the character,
its skeleton over the mask, and six output frames.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from farm import api
from farm.errors import FarmError
from tests.conftest import REPO

SHARED = REPO.parent / "shared" / "data"
IMAGES = (".png", ".jpg", ".jpeg", ".webp")
SHEET_HEIGHT = 240


def characters() -> list[Path]:
    """The character images of jobs/media and ../shared/data (masks excluded)."""
    found = []
    for folder in (REPO / "jobs" / "media", SHARED):
        if folder.is_dir():
            found += [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGES and "_mask" not in p.stem]
    unique = {}
    for path in found:  # the shared copy of a shipped drawing is the same picture
        unique.setdefault(path.name, path)
    return list(unique.values())


def survey(out: Path, motion: Path, size: int, only: list[str] | None = None) -> list[dict]:
    rows = []
    for image in characters():
        if only and not any(part in image.name for part in only):
            continue
        row = {"character": image.name}
        try:
            result = api.render(motion, image, out=out / "renders", shot_id=image.stem.replace(" ", "-")[:64],
                                overrides=[f"output.size={size}"], force=True)
        except FarmError as exc:
            rows.append({**row, "status": "refused", "reason": str(exc)})
            continue
        if result.status == "failed":
            rows.append({**row, "status": "refused", "reason": result.error})
            continue
        manifest = result.manifest
        metrics, character = manifest.get("metrics", {}), manifest.get("character", {})
        rows.append({
            **row, "status": "rendered", "skeleton": character.get("skeleton_source"),
            "mask": character.get("mask_method"), "detection": character.get("detection"),
            "pose_source": metrics.get("pose_source"), "pck": metrics.get("pose_pck"),
            "drift": metrics.get("appearance_drift"), "qa": "flagged" if manifest["qa"]["needs_rerender"] else "passes",
            "reasons": manifest["qa"]["reasons"],
        })
        _sheet(result.video, image, out / f"{image.stem}.png")
    return rows


def _sheet(video: Path, image: Path, path: Path) -> None:
    """The character and six frames of its render, side by side, one row."""
    import av

    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    picks = [frames[round(i)] for i in np.linspace(0, len(frames) - 1, 6)]
    character = cv2.imread(str(image), cv2.IMREAD_COLOR)
    tiles = [cv2.resize(t, (round(t.shape[1] * SHEET_HEIGHT / t.shape[0]), SHEET_HEIGHT)) for t in [character, *picks]]
    cv2.imwrite(str(path), np.hstack(tiles))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.characters_sheet")
    parser.add_argument("out", type=Path)
    parser.add_argument("--motion", type=Path, default=REPO / "jobs" / "media" / "gesture_asl_please.mkv")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--only", nargs="*", help="characters whose file name contains one of these")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = survey(args.out, args.motion, args.size, args.only)
    (args.out / "characters.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        if row["status"] == "refused":
            print(f"{row['character']:40} refused: {row['reason']}")
        else:
            print(f"{row['character']:40} {row['skeleton']:13} {row['mask']:19} {str(row['detection']):16} "
                  f"{row['pose_source']:16} pck {row['pck']} drift {row['drift']} {row['qa']} {'; '.join(row['reasons'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
