"""Stitching: blend overlapping windows back into one stream of exactly T frames (DESIGN §3)."""
from __future__ import annotations

from collections.abc import Iterator

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


class Stitcher:
    """Takes windows in order, gives back finished output frames as soon as they are final.

    A frame is final once no later window covers it, so only the previous window's overlap tail is
    ever held in memory, whatever the length of the video.
    """

    def __init__(self, total: int, blend: str = "linear") -> None:
        self.total = total
        self.blend = blend
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
