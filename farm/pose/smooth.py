"""One-Euro filtering of keypoint trajectories (Casiez, Roussel & Vogel, CHI 2012).

A first-order low-pass whose cutoff rises with the speed of the signal: slow motion is smoothed
hard (jitter gone), fast motion passes with little lag. Per sample, with rate `fps`:

    dx_t  = (x_t - x̂_{t-1}) * fps                      raw speed
    d̂x_t  = a(d_cutoff) * dx_t + (1 - a(d_cutoff)) * d̂x_{t-1}
    f_c   = min_cutoff + beta * |d̂x_t|
    x̂_t   = a(f_c) * x_t + (1 - a(f_c)) * x̂_{t-1}
    a(f)  = 1 / (1 + fps / (2π f))

Coordinates are divided by `scale` before filtering, so speeds are in scales per second and the
same `beta` behaves the same on a 480p and a 4K clip.
"""
from __future__ import annotations

import numpy as np

MIN_CONFIDENCE = 0.3  # samples below this neither pull the filter nor are smoothed


def _alpha(cutoff: np.ndarray | float, fps: float) -> np.ndarray | float:
    return 1.0 / (1.0 + fps / (2.0 * np.pi * cutoff))


def one_euro(
    x: np.ndarray,
    fps: float,
    *,
    confidence: np.ndarray | None = None,
    min_cutoff: float = 1.0,
    beta: float = 2.0,
    d_cutoff: float = 1.0,
    scale: float | None = None,
) -> np.ndarray:
    """Smooth trajectories sampled at `fps` along the first axis.

    x: (T, ...) values, e.g. (T, J, 2) pixel coordinates; every trailing element is filtered on
    its own, all at once. confidence: None, or (T, ...) matching the leading dims of x (e.g. (T, J)
    for (T, J, 2)); a sample with confidence < 0.3 is returned unchanged and resets its
    element's filter, so the next confident sample starts it again without dragging the old
    position across the gap. min_cutoff, d_cutoff: Hz; beta: 1 / (scale units); scale: size the
    coordinates are divided by while filtering (e.g. body height in pixels), None for 1.
    Returns an array of x's shape and dtype.
    """
    values = np.asarray(x, dtype=np.float64) / (1.0 if scale is None else float(scale))
    if confidence is None:
        valid = np.ones(values.shape, dtype=bool)
    else:
        conf = np.asarray(confidence)
        conf = conf.reshape(conf.shape + (1,) * (values.ndim - conf.ndim))
        valid = np.broadcast_to(conf >= MIN_CONFIDENCE, values.shape)

    out = values.copy()
    prev = np.zeros(values.shape[1:])
    speed = np.zeros(values.shape[1:])
    started = np.zeros(values.shape[1:], dtype=bool)
    a_d = _alpha(d_cutoff, fps)
    for t in range(values.shape[0]):
        sample, ok = values[t], valid[t]
        raw_speed = (sample - prev) * fps
        new_speed = np.where(started, a_d * raw_speed + (1.0 - a_d) * speed, 0.0)
        a = _alpha(min_cutoff + beta * np.abs(new_speed), fps)
        filtered = np.where(started, a * sample + (1.0 - a) * prev, sample)
        out[t] = np.where(ok, filtered, sample)
        prev = np.where(ok, filtered, prev)
        speed = np.where(ok, new_speed, 0.0)
        started = ok
    out *= 1.0 if scale is None else float(scale)
    return out.astype(np.asarray(x).dtype, copy=False)
