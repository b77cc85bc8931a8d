"""Stitching: blend overlapping windows back into one stream of exactly T frames (DESIGN §3)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from farm.qa.metrics import join_seam, small
from farm.windows import Window


def blend_weights(n: int, kind: str = "linear") -> np.ndarray:
    """Weight of the incoming window on each of the n overlap frames, rising from ~0 to ~1.

    linear: (k + 1) / (n + 1); cosine: raised cosine with zero slope at both ends.
    """
    k = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
    if kind == "linear":
        return k
    if kind == "cosine":
        return 0.5 - 0.5 * np.cos(np.pi * k)
    raise ValueError(f"unknown blend kind {kind!r}")


# A channel flatter than this (Lab units: L 0..100, a and b about -127..127) has no contrast to
# match; scaling by its std would blow noise up, so it is only shifted.
_FLAT_STD = 0.5


# A correction this close to identity (gain and Lab shift) changes no pixel by a level: skip it.
_NO_CHANGE = 1e-3


LabStats = tuple[np.ndarray, np.ndarray]  # per-channel (mean, std), each (3,) float64


def lab_statistics(frames: np.ndarray) -> LabStats:
    """Per-channel mean and std, each (3,) float64, of (n, H, W, 3) uint8 RGB frames in CIE Lab
    (L in 0..100, a and b about -127..127)."""
    sample = frames[:, ::2, ::2]  # every other row and column: the same statistics for a quarter of the work
    n, h, w, _ = sample.shape
    mean, std = cv2.meanStdDev(_to_lab(sample).reshape(n * h, w, 3))  # accumulates in float64
    return mean.ravel(), std.ravel()


@dataclass(frozen=True)
class ColourFit:
    """A per-channel affine map in Lab, x -> gain * x + shift, that moves one window's colours onto
    its predecessor's. gain, shift: (3,) float64."""

    gain: np.ndarray
    shift: np.ndarray

    @classmethod
    def identity(cls) -> ColourFit:
        return cls(np.ones(3), np.zeros(3))

    @classmethod
    def between(cls, source: LabStats, target: LabStats) -> ColourFit:
        """The map giving colours with statistics `source` (mean, std) the statistics `target`:
        (x - mean_s) / std_s * std_t + mean_t per channel; a flat channel is only shifted."""
        (mean_s, std_s), (mean_t, std_t) = source, target
        gain = np.where(std_s > _FLAT_STD, std_t / np.maximum(std_s, _FLAT_STD), 1.0)
        return cls(gain, mean_t - mean_s * gain)

    def moves(self, stats: LabStats) -> LabStats:
        """What this map makes of colours with statistics `stats`."""
        mean, std = stats
        return self.gain * mean + self.shift, self.gain * std

    @property
    def is_identity(self) -> bool:
        return bool(np.all(np.abs(self.gain - 1.0) < _NO_CHANGE) and np.all(np.abs(self.shift) < _NO_CHANGE))

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Map (n, H, W, 3) uint8 RGB frames. Works in float32 and adds the change to the input
        rather than replacing it with the round trip (OpenCV's Lab conversions are approximate to
        about one level), so the identity gives back the frames bit for bit. One frame at a time:
        the extra memory is one frame's, not the window's."""
        if self.is_identity:
            return frames  # windows that already agree (a deterministic backend): nothing to move
        gain, shift = self.gain.astype(np.float32), self.shift.astype(np.float32)
        out = np.empty_like(frames)
        for i, frame in enumerate(frames):
            lab = _to_lab(frame[None])[0]
            moved = lab * gain + shift
            np.clip(moved[..., 0], 0.0, 100.0, out=moved[..., 0])
            change = cv2.cvtColor(moved, cv2.COLOR_Lab2RGB) - cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
            out[i] = np.clip(np.rint(frame + change * 255.0), 0, 255).astype(np.uint8)
        return out


def overlap_statistics(windows: list[Window], index: int, frames: np.ndarray) -> np.ndarray:
    """Lab statistics of window `index`'s head (the frames its predecessor also covers) and tail
    (the frames its successor also covers), as a (2, 2, 3) array [[head mean, head std], [tail
    mean, tail std]]; NaN where there is no neighbour. frames: the window's own frames. Workers
    compute this next to the frames, so colour fits are chained without loading any frames."""
    window = windows[index]
    out = np.full((2, 2, 3), np.nan)
    if index > 0 and windows[index - 1].end > window.start:
        head = windows[index - 1].end - window.start
        out[0] = lab_statistics(frames[:head])
    if index + 1 < len(windows) and windows[index + 1].start < window.end:
        tail = windows[index + 1].start - window.start
        out[1] = lab_statistics(frames[tail : window.length])
    return out


def chain_fits(statistics: list[np.ndarray]) -> list[ColourFit]:
    """The colour fit of every window from their overlap statistics (overlap_statistics): the
    first window is kept as it is; each later one is fitted, on their overlap, to its predecessor
    as the predecessor's own fit leaves it. Every window is thereby anchored to the first one, and
    errors do not add up along the chain. A window that does not overlap its predecessor (NaN
    statistics: windows cut end to end) has nothing to fit on and keeps the predecessor's fit."""
    fits = [ColourFit.identity()]
    for before, this in zip(statistics, statistics[1:]):
        if np.isnan(this[0]).any() or np.isnan(before[1]).any():
            fits.append(fits[-1])
            continue
        tail = fits[-1].moves((before[1][0], before[1][1]))
        fits.append(ColourFit.between((this[0][0], this[0][1]), tail))
    return fits


def _to_lab(frames: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB -> (n, H, W, 3) float32 Lab."""
    n, h, w, _ = frames.shape
    rgb = frames.reshape(n * h, w, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(n, h, w, 3)


class Stitcher:
    """Takes windows in order, gives back finished output frames as soon as they are final.

    A frame is final once no later window covers it, so only the previous window's overlap tail is
    ever held in memory, whatever the length of the video.

    colour="lab": before blending, each window is colour-matched to its predecessor (chain_fits).
    The fits come with each window (`fit=`, precomputed from overlap statistics, which lets any
    range of windows be stitched on its own) or, without them, are computed here as windows come.
    "none": no matching.

    start, prime(): to stitch only frames [start, ...), e.g. one encode segment of a long video,
    prime the stitcher with the window before the first one it gets.
    """

    def __init__(self, total: int, blend: str = "linear", colour: str = "none", *, start: int = 0) -> None:
        if colour not in ("none", "lab"):
            raise ValueError(f"unknown colour matching {colour!r}: use 'none' or 'lab'")
        self.total = total
        self.blend = blend
        self.colour = colour
        self._emitted = start
        self._tail: np.ndarray | None = None  # frames [self._emitted, prev.end) of the previous window
        self._fit = ColourFit.identity()  # the previous window's fit
        self._tail_stats: LabStats | None = None  # Lab statistics of the previous window's raw tail
        self.seams: list[tuple[int, float]] = []  # (window, seam score of its join with the one before)

    def prime(self, window: Window, frames: np.ndarray, fit: ColourFit | None = None) -> None:
        """Hold the tail of `window` (the one before the next window to add) as a full run would."""
        if not window.start <= self._emitted < window.end:
            raise ValueError(f"window {window.index} does not reach frame {self._emitted}")
        tail = frames[self._emitted - window.start : window.length]
        self._fit = fit or ColourFit.identity()
        self._tail = self._fit.apply(tail) if self.colour == "lab" else tail
        self._tail_stats = lab_statistics(tail) if self.colour == "lab" else None

    def add(self, window: Window, frames: np.ndarray, next_start: int | None, fit: ColourFit | None = None,
            held: int = 0) -> Iterator[np.ndarray]:
        """frames: (>= window.length, H, W, 3) uint8, extra frames are dropped.
        next_start: start of the next window, None for the last one.
        fit: this window's colour fit (chain_fits); computed from the frames when not given.
        held: the first frames of a chained window are the model's re-make of the frames it
        continues from (the pipeline drops them from its own later segments); on those the
        previous window's frames are kept, and the blend runs over the rest of the overlap."""
        if window.start != self._emitted:
            raise ValueError(f"window {window.index} starts at {window.start}, expected {self._emitted}")
        frames = frames[: window.length]
        n = 0 if self._tail is None else len(self._tail)
        final = (window.end if next_start is None else next_start) - window.start
        if self.colour == "lab":
            if fit is None:
                # No overlap: the first window, or one cut end to end with the one before (it keeps that one's fit).
                fit = self._fit if not n else ColourFit.between(lab_statistics(frames[:n]), self._fit.moves(self._tail_stats))
                self._tail_stats = lab_statistics(frames[final:]) if final < len(frames) else None
            self._fit = fit
            frames = fit.apply(frames)
        if n:
            kept = min(held, n)
            # How visible this join is (QA), from both windows' frames where they overlap, as blended;
            # past the kept frames, where the picture first changes from one window to the other.
            first = max(kept - 1, 0)
            ours = [small(f) for f in frames[first : n + 1]]
            self.seams.append((window.index, join_seam([small(f) for f in self._tail[first:]], ours)))
            w = blend_weights(n - kept, self.blend)[:, None, None, None]
            mixed = (1.0 - w) * self._tail[kept:].astype(np.float32) + w * frames[kept:n].astype(np.float32)
            blended = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
            frames = np.concatenate([self._tail[:kept], blended, frames[n:]])
        for frame in frames[:final]:
            self._emitted += 1
            yield frame
        self._tail = frames[final:]

    @property
    def emitted(self) -> int:
        """Output frames given out so far (counted from frame 0)."""
        return self._emitted

    def finish(self, end: int | None = None) -> None:
        """Check that every frame up to `end` (default: the total) was given out."""
        end = self.total if end is None else end
        if self._emitted != end:
            raise RuntimeError(f"stitched up to frame {self._emitted}, expected {end}")
