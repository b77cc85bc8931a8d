"""Sweeps over match settings (DESIGN §4, §5): every combination of the given values, for every shot
of a campaign, rendered as one batch, then compared side by side.

`farm sweep CAMPAIGN match.mode=video,image match.motion_weight=0.3,0.9` parses the overrides with
Hydra's own override grammar (`a,b` lists, `range(start,stop[,step])`, `choice(a,b)`; overrides
without a sweep apply to every render), expands the product, and hands every (shot, combination) to
the Ray runtime at once, so the cluster renders them side by side. Each shot then gets a comparison
video: a grid with one labelled cell per combination, all playing in step.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from farm.errors import FarmError

COMPARISONS = "comparisons"
_SLUG = re.compile(r"[^A-Za-z0-9_.]+")
_MAX_ID = 64
LABEL_HEIGHT = 26
MAX_WIDTH = 1920  # of a comparison video


@dataclass(frozen=True)
class Setting:
    """One combination of a sweep: its overrides and a short label (the swept keys' last parts)."""

    overrides: tuple[str, ...]
    label: str

    @property
    def slug(self) -> str:
        """The combination's values, for shot ids: 'video-0.3'."""
        return "-".join(slug(_short(o.split("=", 1)[1])) for o in self.overrides)


def slug(text: str) -> str:
    """Text as a piece of a shot id: letters, digits, '_' and '.'."""
    return _SLUG.sub("_", text).strip("_.") or "_"


def expand(overrides: list[str]) -> tuple[list[str], list[Setting]]:
    """Split overrides into the ones every render takes and the sweep's combinations (the product
    of every swept key's values, the last key varying fastest, as Hydra's basic sweeper orders
    them). No sweep at all is an error: `farm submit` renders one setting."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise FarmError("sweep overrides", str(exc).strip().splitlines()[0],
                        "use Hydra's sweep grammar: key=a,b  key=range(0,3)  key=choice(a,b)") from None
    fixed, axes = [], []
    for override in parsed:
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        key = override.get_key_element()
        values = list(override.sweep_string_iterator())
        if not values:
            raise FarmError(f"sweep {key}", "sweeps over no value", "give at least one value, e.g. key=a,b")
        axes.append([(key, value) for value in values])
    if not axes:
        raise FarmError("sweep", "no key sweeps over several values",
                        "give at least one sweep, e.g. match.mode=video,image (or use farm submit)")
    settings = []
    for combination in itertools.product(*axes):
        label = ", ".join(f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in combination)
        settings.append(Setting(tuple(f"{key}={value}" for key, value in combination), label))
    return fixed, settings


def variant_ids(base: str, settings: list[Setting]) -> list[str]:
    """The shot id of each combination: `<shot>--<values>`, or `<shot>--s<number>` for all of them
    when a readable one is too long for an id or two would be the same (0.5 and -0.5, 'a b' and 'a_b')."""
    readable = [f"{base}--{setting.slug}" for setting in settings]
    if len(set(readable)) == len(readable) and all(len(r) <= _MAX_ID for r in readable):
        return readable
    suffix = max(2, len(str(len(settings))))
    if len(base) + 3 + suffix <= _MAX_ID:
        return [f"{base}--s{k + 1:0{suffix}d}" for k in range(len(settings))]
    # Shortened, with a hash of the whole id: two long ids that start alike stay apart.
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    short = base[: _MAX_ID - 12 - suffix].rstrip("-_.")
    return [f"{short}-{digest}--s{k + 1:0{suffix}d}" for k in range(len(settings))]


def write_comparison(path: Path, cells: list[tuple[str, Path | None, str]]) -> int:
    """A grid video of the variants of one shot. cells: (label, local video or None when it failed,
    note: e.g. the failure, shown in an empty cell). Cells play in step at the first video's frame
    rate (each picks its frame by time, and holds its last one); returns the frame count."""
    from farm.media.decode import iter_frames
    from farm.media.encode import VideoWriter
    from farm.media.probe import probe_video

    probes = {video: probe_video(video) for _, video, _ in cells if video is not None}
    if not probes:
        raise FarmError(str(path), "no variant of the shot has a video", "see the shots' errors in campaign.json")
    first = next(iter(probes.values()))
    fps = Fraction(first.fps_fraction)
    duration = max(p.frame_count / p.fps for p in probes.values())
    total = max(1, round(duration * float(fps)))
    cols = math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / cols)
    cell_w = _even(min(512, MAX_WIDTH // cols))
    aspect = max(p.height / p.width for p in probes.values())
    cell_h = _even(cell_w * aspect)
    width, height = cols * cell_w, rows * (cell_h + LABEL_HEIGHT)
    streams = {video: (iter_frames(video), p.fps) for video, p in probes.items()}
    current: dict[Path, tuple[int, np.ndarray | None]] = {video: (-1, None) for video in probes}
    with VideoWriter(path, fps=fps, width=width, height=height, crf=23, preset="veryfast") as writer:
        for t in range(total):
            canvas = np.full((height, width, 3), 24, np.uint8)
            for k, (label, video, note) in enumerate(cells):
                x, y = (k % cols) * cell_w, (k // cols) * (cell_h + LABEL_HEIGHT)
                _text(canvas, label, x + 6, y + LABEL_HEIGHT - 8, 0.5)
                if video is None:
                    _text(canvas, note[:60], x + 6, y + LABEL_HEIGHT + cell_h // 2, 0.4, (230, 110, 110))
                    continue
                frame = _frame_at(streams[video], current, video, t / float(fps))
                canvas[y + LABEL_HEIGHT : y + LABEL_HEIGHT + cell_h, x : x + cell_w] = _fit(frame, cell_w, cell_h)
            writer.write(canvas)
    return total


def _frame_at(stream, current: dict, video: Path, seconds: float) -> np.ndarray:
    """The video's frame showing at `seconds` (decoding forward as needed; its last frame after its end)."""
    frames, fps = stream
    wanted = int(seconds * float(fps) + 1e-6)
    index, frame = current[video]
    while index < wanted:
        following = next(frames, None)
        if following is None:
            break
        index, frame = index + 1, following
    current[video] = (index, frame)
    return frame


def _fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """The frame scaled into width x height, letterboxed."""
    h, w = frame.shape[:2]
    scale = min(width / w, height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    cell = np.full((height, width, 3), 24, np.uint8)
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    x, y = (width - size[0]) // 2, (height - size[1]) // 2
    cell[y : y + size[1], x : x + size[0]] = small
    return cell


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float, colour=(235, 235, 235)) -> None:
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def _short(value: str) -> str:
    """A swept value for a label: floats from range() lose their binary noise (0.8999999999999999 -> 0.9)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.6g}" if "." in value or "e" in value.lower() else value


def _even(x: float) -> int:
    return max(2, int(x) // 2 * 2)
