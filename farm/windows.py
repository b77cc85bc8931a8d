"""Window plans: how T output frames are cut into overlapping windows (DESIGN §3)."""
from __future__ import annotations

from dataclasses import dataclass

from farm.errors import FarmError


@dataclass(frozen=True)
class Window:
    """Output frames [start, end). render_length >= end - start is what the backend generates
    (its frame-length rule may round up); frames past `end - start` are dropped."""

    index: int
    start: int
    end: int
    render_length: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict:
        return {"index": self.index, "start": self.start, "end": self.end, "render_length": self.render_length}


def valid_length(n: int, frame_multiple: int) -> int:
    """Smallest length >= n of the form frame_multiple * k + 1 (any n when frame_multiple is 1)."""
    if frame_multiple <= 1:
        return n
    k = max(0, -(-(n - 1) // frame_multiple))
    return frame_multiple * k + 1


def plan_windows(total: int, length: int, overlap: int, frame_multiple: int = 1) -> list[Window]:
    """Cover frames [0, total) with windows of `length` frames stepping by `length - overlap`.

    The last window is shifted back to end exactly at `total`, so no padding reaches the output;
    a clip shorter than one window becomes one window of `total` frames (rendered at the next valid
    length, then trimmed). Without overlap, for a backend that takes any length (the puppet, whose
    frames each depend on their own pose only), the windows are cut end to end and the last one is
    shorter: no frame is rendered twice.
    """
    if total < 1:
        raise FarmError("window plan", f"cannot plan windows for {total} frames", "the motion video has no frames")
    if valid_length(length, frame_multiple) != length:
        raise FarmError(
            "config window.length",
            f"{length} does not fit the backend's rule {frame_multiple}k+1",
            f"use {valid_length(length, frame_multiple)}",
        )
    if not 0 <= overlap < length:
        raise FarmError("config window.overlap", f"{overlap} must be in [0, {length})", "lower window.overlap")
    if total <= length:
        return [Window(0, 0, total, valid_length(total, frame_multiple))]
    if overlap == 0 and frame_multiple == 1:  # windows of any length that need no blending: cut end to end
        return [Window(i, s, min(s + length, total), min(length, total - s)) for i, s in enumerate(range(0, total, length))]
    step = length - overlap
    starts = list(range(0, total - length, step)) + [total - length]
    return [Window(i, s, s + length, length) for i, s in enumerate(starts)]


def new_frames(windows: list[Window]) -> list[int]:
    """Output frames each window adds to those of the windows before it (windows in order of start):
    what progress counts, so a shot's windows add up to its frames, overlaps counted once."""
    counted, end = [], 0
    for window in windows:
        counted.append(max(0, window.end - max(window.start, end)))
        end = max(end, window.end)
    return counted


def overlap_overhead(windows: list[Window], total: int) -> float:
    """(frames generated - total) / total: the redundant compute spent on overlaps and rounding."""
    return (sum(w.render_length for w in windows) - total) / total


@dataclass(frozen=True)
class Segment:
    """A run of windows [first, stop) stitched and encoded on its own: output frames [start, end).
    Segments are encoded in parallel and joined without re-encoding."""

    index: int
    first: int
    stop: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_segments(windows: list[Window], total: int, frames: int) -> list[Segment]:
    """Cut the windows into segments of at least `frames` output frames each (0: one segment).

    A segment starts where a window starts and stitches from there, holding the tail of the window
    before it; it never starts at a window that also overlaps the window two before (which the
    last, shifted-back window can), so its first frames are blended exactly as in one pass. The cut
    depends only on the window plan and `frames`, not on the cluster, so a shot's video is the
    same wherever it is rendered.
    """
    cuts = [0]
    if frames > 0:
        for w in range(1, len(windows)):
            clean = w < 2 or windows[w - 2].end <= windows[w].start
            if clean and windows[w].start - windows[cuts[-1]].start >= frames and total - windows[w].start >= frames // 2:
                cuts.append(w)
    cuts.append(len(windows))
    ends = [windows[c].start for c in cuts[1:-1]] + [total]
    return [Segment(i, a, b, windows[a].start, end) for i, (a, b, end) in enumerate(zip(cuts, cuts[1:], ends))]


def plan_chains(windows: list[Window], chains: int) -> list[tuple[int, int]]:
    """Cut the windows into `chains` runs [first, stop) of consecutive windows, as even as the
    count allows (fewer when there are fewer windows). Each run renders in order, every window
    conditioned on the one before it; the runs render in parallel."""
    count = max(1, min(chains, len(windows)))
    bounds = [round(k * len(windows) / count) for k in range(count + 1)]
    return list(zip(bounds, bounds[1:]))



def plan_chained_windows(total: int, length: int, condition: int, join: int, chains: int,
                         frame_multiple: int = 1) -> tuple[list[Window], list[tuple[int, int]]]:
    """Windows for window.mode=chained, and the chains [first, stop) they form.

    Inside a chain each window overlaps the one before by the `condition` frames it continues
    from. Each chain after the first starts from nothing while the chain before it renders, like a
    parallel window, so its join is a blend of two independent generations: it starts `join`
    frames before the chain before it ends, not `condition` (1 or 5 for Wan), over which such a
    blend would be a cut. The windows are the fewest that cover `total` frames so, spread over the
    chains as evenly as the count allows (fewer chains when there are too few windows); as in
    plan_windows, only the very last window is shifted back to end at `total`.
    """
    if not 0 <= join < length:
        raise FarmError("config window.overlap", f"{join} must be in [0, {length})", "lower window.overlap")
    most = len(plan_windows(total, length, condition, frame_multiple))
    for count in range(max(1, min(chains, most)), 0, -1):
        planned = _chain_plan(total, length, condition, join, count, frame_multiple)
        if planned is not None:
            return planned
    raise AssertionError("one chain always covers the frames")  # count 1 is plan_windows itself


def _chain_plan(total: int, length: int, condition: int, join: int, count: int,
                frame_multiple: int) -> tuple[list[Window], list[tuple[int, int]]] | None:
    """`count` chains for plan_chained_windows, or None when fewer chains already cover `total`
    (the last one would add no frame)."""
    step = length - condition
    short = total - count * length + (count - 1) * join  # frames that one window per chain leaves uncovered
    needed = count + max(0, -(-short // step))
    windows: list[Window] = []
    bounds = []
    start = 0
    for k in range(count):
        size = round((k + 1) * needed / count) - round(k * needed / count)
        end = min(start + length + (size - 1) * step, total)
        if end == total and k < count - 1:
            return None
        run = plan_windows(end - start, length, condition, frame_multiple)
        bounds.append((len(windows), len(windows) + len(run)))
        windows += [Window(len(windows) + i, start + w.start, start + w.end, w.render_length) for i, w in enumerate(run)]
        start = end - join
    return windows, bounds
