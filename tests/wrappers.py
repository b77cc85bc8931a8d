"""Backend wrappers for runtime.backend_wrapper in tests: they render what the backend renders and
spoil the window holding SPOILED_FRAME, as a sampling model sometimes does (the frames turn to a
flat green field). Ray's workers import them as the driver does (the repository root is their
working directory)."""
from __future__ import annotations

import dataclasses

import numpy as np

from farm.backends.base import WindowRequest, WindowResult

SPOILED_FRAME = 50
GREEN = np.array([40, 200, 60], np.uint8)


class _Spoiling:
    """The backend, made to sample (deterministic=False); `spoils(request)` says which windows to spoil."""

    def __init__(self, backend, spoils) -> None:
        self.backend, self.spoils = backend, spoils
        self.spec = dataclasses.replace(backend.spec, deterministic=False)

    def prepare(self, character, canvas) -> None:
        self.backend.prepare(character, canvas)

    def render_window(self, request: WindowRequest) -> WindowResult:
        result = self.backend.render_window(request)
        if self.spoils(request):
            frames = np.empty_like(result.frames)
            frames[...] = GREEN
            result = dataclasses.replace(result, frames=frames)
        return result


def _holds(request: WindowRequest, frame: int) -> bool:
    return request.start <= frame < request.end


def spoil_first_take(backend):
    """The window holding SPOILED_FRAME is spoiled with the shot's own seed (0), its first take."""
    return _Spoiling(backend, lambda r: _holds(r, SPOILED_FRAME) and r.seed == 0)


def spoil_every_take(backend):
    """The first window is spoiled whatever the seed."""
    return _Spoiling(backend, lambda r: r.start == 0)


def another_spec(backend):
    """A wrapper that claims other windows than the backend's: refused."""
    wrapped = _Spoiling(backend, lambda r: False)
    wrapped.spec = dataclasses.replace(backend.spec, window_length=backend.spec.window_length * 2)
    return wrapped


class _Slow:
    """The backend as it is, taking `seconds` more for each window (a GPU model's pace)."""

    def __init__(self, backend, seconds: float) -> None:
        self.backend, self.seconds, self.spec = backend, seconds, backend.spec

    def prepare(self, character, canvas) -> None:
        self.backend.prepare(character, canvas)

    def render_window(self, request: WindowRequest) -> WindowResult:
        import time

        time.sleep(self.seconds)
        return self.backend.render_window(request)


def slow_windows(backend):
    """Each window takes 3 s more: long enough for the shot's other work to run beside them."""
    return _Slow(backend, 3.0)
