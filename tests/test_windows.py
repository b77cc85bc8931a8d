import cv2
import numpy as np
import pytest

from farm.errors import FarmError
from farm.media.decode import read_frames
from farm.stitch import Stitcher, blend_weights, chain_fits, lab_statistics, overlap_statistics
from farm.windows import overlap_overhead, plan_segments, plan_windows, valid_length
from tests.conftest import REPO


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


# Colour anchoring: every window shows the same real video; later windows carry colour casts, as a
# generator drifting in colour would give them. The first window is the truth to anchor to.


@pytest.fixture(scope="module")
def video():
    """40 frames of a real gesture clip, (40, 120, 160, 3) uint8 RGB (shrunk to keep tests fast)."""
    frames = read_frames(REPO / "jobs" / "media" / "gesture_asl_please.mkv", 0, 40)
    return np.stack([cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA) for f in frames])


def _cast(frames, lightness, a, b):
    """Shift L, a and b (Lab units, L in 0..100) of uint8 RGB frames: a brightness change and a tint."""
    n, h, w, _ = frames.shape
    rgb = frames.reshape(n * h, w, 3).astype(np.float32) / 255.0
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab) + np.float32([lightness, a, b])
    out = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB).reshape(n, h, w, 3)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def _stitch(video, windows, casts, colour):
    stitcher = Stitcher(windows[-1].end, colour=colour)
    out = []
    for i, (w, cast) in enumerate(zip(windows, casts)):
        frames = video[w.start : w.end] if cast is None else _cast(video[w.start : w.end], *cast)
        out.extend(stitcher.add(w, frames, windows[i + 1].start if i + 1 < len(windows) else None))
    stitcher.finish()
    return np.stack(out)


def _mean_abs_diff(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _stats_gap(frames, truth):
    """Largest difference of per-channel Lab mean and std between two frame stacks (Lab units)."""
    (mean, std), (true_mean, true_std) = lab_statistics(frames), lab_statistics(truth)
    return float(max(np.abs(mean - true_mean).max(), np.abs(std - true_std).max()))


def test_lab_colour_matching_removes_a_cast_and_its_seam(video):
    windows = plan_windows(30, 18, 6)  # [0, 18) and [12, 30)
    before, after = windows[1].start - 1, windows[0].end  # last frame before the overlap, first after
    truth_seam = _mean_abs_diff(video[before], video[after])  # the motion's own change
    casts = [None, (12.0, 6.0, -8.0)]

    plain = _stitch(video, windows, casts, "none")
    matched = _stitch(video, windows, casts, "lab")

    assert len(plain) == len(matched) == 30
    assert _mean_abs_diff(plain[before], plain[after]) - truth_seam > 20
    assert _stats_gap(plain[after:], video[after:30]) > 10
    assert abs(_mean_abs_diff(matched[before], matched[after]) - truth_seam) < 1
    # The cast is gone from the whole window, not only at the seam.
    assert _stats_gap(matched[after:], video[after:30]) < 0.5
    assert _mean_abs_diff(matched[after:], video[after:30]) < 2


def test_lab_colour_matching_stays_anchored_to_the_first_window_along_a_chain(video):
    windows = plan_windows(40, 16, 6)  # four windows
    casts = [None, (5.0, 3.0, -3.0), (10.0, 6.0, -6.0), (15.0, 9.0, -9.0)]  # the drift adds up
    last_only = windows[-2].end

    plain = _stitch(video, windows, casts, "none")
    matched = _stitch(video, windows, casts, "lab")

    assert len(matched) == 40
    assert _stats_gap(plain[last_only:], video[last_only:]) > 10
    assert _stats_gap(matched[last_only:], video[last_only:]) < 0.5
    assert _mean_abs_diff(matched[last_only:], video[last_only:]) < 2


def test_lab_colour_matching_leaves_identical_windows_bit_exact(video):
    windows = plan_windows(40, 16, 6)
    assert np.array_equal(_stitch(video, windows, [None] * 4, "lab"), video)


def test_lab_colour_matching_shifts_flat_windows_instead_of_dividing_by_zero():
    windows = plan_windows(30, 18, 6)
    stitcher = Stitcher(30, colour="lab")
    out = []
    for i, level in enumerate((90, 150)):
        frames = np.full((18, 4, 4, 3), level, np.uint8)
        out.extend(stitcher.add(windows[i], frames, windows[1].start if i == 0 else None))
    stitcher.finish()
    assert len(out) == 30
    assert all(abs(int(f[0, 0, 0]) - 90) <= 1 for f in out)


def test_unknown_colour_matching_is_refused():
    with pytest.raises(ValueError, match="histogram"):
        Stitcher(10, colour="histogram")


def test_segments_cut_at_window_starts_cover_every_frame_once():
    windows = plan_windows(1394, 48, 8)
    segments = plan_segments(windows, 1394, 240)
    assert [s.length for s in segments] == [240, 240, 240, 240, 240, 194]
    assert segments[0].start == 0 and segments[-1].end == 1394
    assert all(a.end == b.start and a.stop == b.first for a, b in zip(segments, segments[1:]))
    assert all(windows[s.first].start == s.start for s in segments)
    assert len(plan_segments(windows, 1394, 0)) == 1
    # The last window, shifted back, also overlaps the window two before it: no segment starts there.
    short = plan_windows(90, 48, 8)  # [0, 48), [40, 88), [42, 90)
    assert [s.first for s in plan_segments(short, 90, 10)] == [0, 1]


def test_segments_stitched_apart_give_the_frames_of_one_pass(video):
    """Colour fits chained from the overlap statistics alone let each segment be stitched on its
    own (on another worker): joined, the segments are the one-pass stitch, bit for bit."""
    windows = plan_windows(40, 16, 6)
    casts = [None, (5.0, 3.0, -3.0), (10.0, 6.0, -6.0), (15.0, 9.0, -9.0)]
    frames = [video[w.start : w.end] if c is None else _cast(video[w.start : w.end], *c) for w, c in zip(windows, casts)]
    whole = _stitch(video, windows, casts, "lab")
    fits = chain_fits([overlap_statistics(windows, w.index, f) for w, f in zip(windows, frames)])
    parts = []
    for segment in plan_segments(windows, 40, 10):
        stitcher = Stitcher(40, colour="lab", start=segment.start)
        if segment.first:
            stitcher.prime(windows[segment.first - 1], frames[segment.first - 1], fits[segment.first - 1])
        for w in range(segment.first, segment.stop):
            nxt = windows[w + 1].start if w + 1 < len(windows) else None
            parts.extend(stitcher.add(windows[w], frames[w], nxt, fits[w]))
        stitcher.finish(segment.end)
    assert len(plan_segments(windows, 40, 10)) == 3
    assert np.array_equal(np.stack(parts), whole)


def test_chains_join_over_the_join_overlap_and_their_windows_over_the_conditioning_frames():
    from farm.windows import plan_chained_windows

    # 243 frames of Wan windows (77 frames, continuing from 1) in three chains joined over 8 frames.
    windows, chains = plan_chained_windows(243, 77, 1, 8, 3, frame_multiple=4)
    assert [(w.start, w.end) for w in windows] == [(0, 77), (69, 146), (145, 222), (214, 243)]
    assert chains == [(0, 1), (1, 3), (3, 4)]
    heads = {first for first, _ in chains}
    for before, window in zip(windows, windows[1:]):
        assert before.end - window.start == (8 if window.index in heads else 1)
    assert len(windows) == len(plan_windows(243, 77, 1, frame_multiple=4))  # no window more than one chain needs
    assert windows[-1].render_length == 29 and windows[-1].length == 29


def test_one_chain_is_the_plain_plan_and_a_join_overlap_past_the_window_is_refused():
    from farm.windows import plan_chained_windows

    windows, chains = plan_chained_windows(73, 29, 1, 8, 1, frame_multiple=4)
    assert windows == plan_windows(73, 29, 1, frame_multiple=4) and chains == [(0, 3)]
    with pytest.raises(FarmError, match="window.overlap"):
        plan_chained_windows(73, 29, 1, 29, 2, frame_multiple=4)


def test_the_stitch_keeps_the_frames_a_chained_window_continues_from():
    """A chained window's first frames are the model's re-make of the frames it continues from:
    the earlier window's own frames are kept there, and the blend runs over the rest of the overlap."""
    windows = plan_windows(20, 12, 4)  # [0, 12) and [8, 20): 4 frames of overlap
    first = np.full((12, 2, 2, 3), 100, np.uint8)
    second = np.full((12, 2, 2, 3), 200, np.uint8)
    stitcher = Stitcher(20)
    out = list(stitcher.add(windows[0], first, windows[1].start))
    out += list(stitcher.add(windows[1], second, None, held=2))
    stitcher.finish()
    levels = [int(f[0, 0, 0]) for f in out]
    assert levels[:10] == [100] * 10  # the held frames 8 and 9 are the first window's
    assert levels[10:12] == [133, 167]  # blended over the 2 frames left, as a 2-frame overlap
    assert levels[12:] == [200] * 8
