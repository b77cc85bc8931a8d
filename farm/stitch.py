"""Stitching: blend overlapping windows back into one stream of exactly T frames (DESIGN §3)."""
from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

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


def lab_statistics(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std, each (3,) float64, of (n, H, W, 3) uint8 RGB frames in CIE Lab
    (L in 0..100, a and b about -127..127)."""
    lab = _to_lab(frames).reshape(-1, 3)
    return lab.mean(axis=0, dtype=np.float64), lab.std(axis=0, dtype=np.float64)


def match_colour(frames: np.ndarray, source: tuple[np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Map (n, H, W, 3) uint8 RGB frames so that colours with Lab statistics `source` (mean, std)
    get the statistics `target`: per channel x -> (x - mean_s) / std_s * std_t + mean_t.

    Works in float32 and adds the change to the input rather than replacing it with the round trip
    (OpenCV's Lab conversions are approximate to about one level), so equal statistics give back
    the frames bit for bit. One frame at a time: the extra memory is one frame's, not the window's.
    """
    (mean_s, std_s), (mean_t, std_t) = source, target
    gain = np.where(std_s > _FLAT_STD, std_t / np.maximum(std_s, _FLAT_STD), 1.0)
    gain, shift = gain.astype(np.float32), (mean_t - mean_s * gain).astype(np.float32)
    if np.all(np.abs(gain - 1.0) < _NO_CHANGE) and np.all(np.abs(shift) < _NO_CHANGE):
        return frames  # windows that already agree (a deterministic backend): nothing to move
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        lab = _to_lab(frame[None])[0]
        moved = lab * gain + shift
        np.clip(moved[..., 0], 0.0, 100.0, out=moved[..., 0])
        change = cv2.cvtColor(moved, cv2.COLOR_Lab2RGB) - cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
        out[i] = np.clip(np.rint(frame + change * 255.0), 0, 255).astype(np.uint8)
    return out


def _to_lab(frames: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB -> (n, H, W, 3) float32 Lab."""
    n, h, w, _ = frames.shape
    rgb = frames.reshape(n * h, w, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(n, h, w, 3)


class Stitcher:
    """Takes windows in order, gives back finished output frames as soon as they are final.

    A frame is final once no later window covers it, so only the previous window's overlap tail is
    ever held in memory, whatever the length of the video.

    colour="lab": before blending, each window is colour-matched to its predecessor on their
    overlap (per-channel Lab mean and std of the predecessor's tail vs this window's head, applied
    to the whole window). The tail it is matched to was itself corrected, so every window is
    anchored to the first one and errors do not add up along the chain. "none": no matching.
    """

    def __init__(self, total: int, blend: str = "linear", colour: str = "none") -> None:
        if colour not in ("none", "lab"):
            raise ValueError(f"unknown colour matching {colour!r}: use 'none' or 'lab'")
        self.total = total
        self.blend = blend
        self.colour = colour
        self._emitted = 0
        self._tail: np.ndarray | None = None  # frames [self._emitted, prev.end) of the previous window

    def add(self, window: Window, frames: np.ndarray, next_start: int | None) -> Iterator[np.ndarray]:
        """frames: (>= window.length, H, W, 3) uint8, extra frames are dropped.
        next_start: start of the next window, None for the last one."""
        if window.start != self._emitted:
            raise ValueError(f"window {window.index} starts at {window.start}, expected {self._emitted}")
        frames = frames[: window.length]
        if self._tail is not None and len(self._tail):
            n = len(self._tail)
            if self.colour == "lab":
                frames = match_colour(frames, lab_statistics(frames[:n]), lab_statistics(self._tail))
            w = blend_weights(n, self.blend)[:, None, None, None]
            mixed = (1.0 - w) * self._tail.astype(np.float32) + w * frames[:n].astype(np.float32)
            frames = np.concatenate([np.clip(np.rint(mixed), 0, 255).astype(np.uint8), frames[n:]])
        final = (window.end if next_start is None else next_start) - window.start
        for frame in frames[:final]:
            self._emitted += 1
            yield frame
        self._tail = frames[final:]

    def finish(self) -> None:
        if self._emitted != self.total:
            raise RuntimeError(f"stitched {self._emitted} frames, expected {self.total}")
