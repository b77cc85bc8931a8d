import numpy as np
import pytest

from farm.errors import FarmError
from farm.stitch import Stitcher, blend_weights
from farm.windows import overlap_overhead, plan_windows, valid_length


def test_windows_cover_every_frame_and_last_window_ends_exactly_at_last_frame():
    windows = plan_windows(194, 48, 8)
    assert windows[0].start == 0
    assert windows[-1].end == 194
    assert all(w.length == 48 for w in windows)
    covered = np.zeros(194, bool)
    for a, b in zip(windows, windows[1:]):
        assert b.start < a.end  # consecutive windows overlap
    for w in windows:
        covered[w.start : w.end] = True
    assert covered.all()
    assert [w.start for w in windows] == [0, 40, 80, 120, 146]


def test_short_clip_is_one_window_rounded_to_the_backend_rule():
    (w,) = plan_windows(30, 77, 8, frame_multiple=4)
    assert (w.start, w.end, w.render_length) == (0, 30, 33)
    assert valid_length(77, 4) == 77 and valid_length(78, 4) == 81


def test_window_length_must_fit_backend_rule():
    with pytest.raises(FarmError, match="window.length"):
        plan_windows(200, 48, 8, frame_multiple=4)


def test_overlap_overhead_counts_redundant_frames():
    windows = plan_windows(194, 48, 8)
    assert overlap_overhead(windows, 194) == pytest.approx((5 * 48 - 194) / 194)


def test_linear_and_cosine_ramps_rise_monotonically_between_zero_and_one():
    for kind in ("linear", "cosine"):
        w = blend_weights(8, kind)
        assert np.all(np.diff(w) > 0) and 0 < w[0] < 0.2 and 0.8 < w[-1] < 1
    assert np.allclose(blend_weights(8, "linear") + blend_weights(8, "linear")[::-1], 1.0)


def _window_frames(w, value_of):
    return np.stack([np.full((2, 2, 3), value_of(w.index, t), np.uint8) for t in range(w.start, w.end)])


def test_stitch_gives_exactly_total_frames_and_blends_overlaps():
    windows = plan_windows(100, 30, 10)
    stitcher = Stitcher(100, "linear")
    out = []
    for i, w in enumerate(windows):
        nxt = windows[i + 1].start if i + 1 < len(windows) else None
        out.extend(stitcher.add(w, _window_frames(w, lambda idx, t: 0 if idx % 2 == 0 else 200), nxt))
    stitcher.finish()
    assert len(out) == 100
    values = np.array([f[0, 0, 0] for f in out], float)
    # Inside the first overlap the value ramps from window 0 (0) to window 1 (200).
    a, b = windows[1].start, windows[0].end
    assert values[: a].max() == 0
    assert np.all(np.diff(values[a:b]) > 0)
    assert values[b] == 200


def test_stitch_of_identical_windows_is_lossless():
    windows = plan_windows(77, 20, 6)
    stitcher = Stitcher(77)
    out = []
    for i, w in enumerate(windows):
        nxt = windows[i + 1].start if i + 1 < len(windows) else None
        out.extend(stitcher.add(w, _window_frames(w, lambda idx, t: t), nxt))
    stitcher.finish()
    assert [int(f[0, 0, 0]) for f in out] == list(range(77))
