"""Steps 8-9 for one segment of a shot: stitch its windows and encode them; QA measures the frames on the way."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from farm.native import give_memory_back
from farm.shot.planned import ShotPlan
from farm.shot.tools import storage_for
from farm.shot.types import QA_SUFFIX
from farm.storage.local import write_atomically
from farm.windows import Segment


def encode_segment(plan: ShotPlan, segment: Segment, window_logs: list[dict], *, worker: str = "local",
                   ready: Callable[[int], list[dict]] | None = None) -> dict:
    """Stitch the segment's windows (colour-fitted along the whole chain, see
    farm.stitch.chain_fits) into frames [segment.start, segment.end) and encode them, without audio,
    to the segment's file; uploaded for s3:// outputs. Returns the segment's log entry.

    x264 runs on one thread: its output depends on its thread count, and a shot's video must not
    depend on the machine (segments of a long video encode side by side on the farm instead).
    Every frame carries the shot's watermark (provenance.watermark) before it is measured and encoded.

    ready(w): waits until window w is rendered and returns the windows' logs so far (farm.shot.render
    streams: the windows render on another thread while this one encodes those already made); None:
    every window of the segment is rendered and `window_logs` holds their logs."""
    from farm.media.encode import VideoWriter
    from farm.qa.measure import Appearance, FrameMeter
    from farm.qa.track import Texture
    from farm.stitch import Stitcher

    started = time.perf_counter()
    cfg, windows, code = plan.cfg, plan.windows, plan.watermark
    if ready is None:
        ready = lambda w: window_logs  # noqa: E731 - all rendered
    fits = _Fits(plan, ready) if cfg.window.colour == "lab" else (lambda w: None)
    stitcher = Stitcher(len(plan.targets), cfg.window.blend, cfg.window.colour, start=segment.start)
    if segment.first > 0 and windows[segment.first - 1].end > segment.start:  # its overlap tail blends into this segment
        before = windows[segment.first - 1]
        ready(before.index)
        stitcher.prime(before, plan.window_frames(before), fits(before.index))
    path = plan.segment_file(segment)
    path.parent.mkdir(parents=True, exist_ok=True)
    texture = None if plan.detector_sees else Texture.of(plan.character)  # its pose is tracked by its texture
    meter = FrameMeter(Appearance.of(plan.character), plan.targets[segment.start : segment.end],
                       detect_pose=plan.detector_sees, texture=texture)
    with VideoWriter(path, fps=plan.fps, width=plan.canvas.width, height=plan.canvas.height,
                     crf=cfg.output.crf, preset=cfg.output.preset, threads=1) as writer, meter:
        for w in range(segment.first, segment.stop):
            ready(w)
            _encode_window(plan, w, stitcher, fits(w), writer, meter, code)
            give_memory_back()  # the window's pages: three threads' heaps otherwise only grow
        stitcher.finish(segment.end)
    measured = plan.segment_file(segment, QA_SUFFIX)
    seams = np.array(stitcher.seams, np.float64).reshape(-1, 2)  # (window, seam score) of the joins made here
    write_atomically(measured, lambda out: np.savez(out, **meter.result(), seams=seams), str(measured))
    if plan.remote:
        storage_for(cfg).put_file(path, plan.segment_uri(segment))
        storage_for(cfg).put_file(measured, plan.segment_uri(segment, QA_SUFFIX))
    return {"index": segment.index, "start": segment.start, "end": segment.end, "worker": worker,
            "seconds": round(time.perf_counter() - started, 3), "measure_seconds": round(meter.seconds, 3)}


def _encode_window(plan: ShotPlan, w: int, stitcher, fit, writer, meter, code: int | None) -> None:
    """Stitch window w into the segment, watermark, encode and measure its frames. Its own
    function: the window's frames are let go when it returns, before the next window is read."""
    from farm.provenance.watermark import embed

    window, windows = plan.windows[w], plan.windows
    next_start = windows[w + 1].start if w + 1 < len(windows) else None
    for frame in stitcher.add(window, plan.window_frames(window), next_start, fit, held=plan.held_frames(window)):
        if code is not None:
            frame = embed(frame, code)
        writer.write(frame)
        meter.add(frame)  # QA measures the frames as they are encoded, segments side by side


class _Fits:
    """The colour fit of window w (farm.stitch.chain_fits: it depends on the windows up to w only),
    from the overlap statistics each window's worker measured; read back from the checkpoint for a
    window reused from an earlier run, or measured here for a checkpoint that predates them."""

    def __init__(self, plan: ShotPlan, ready: Callable[[int], list[dict]]) -> None:
        self.plan, self.ready = plan, ready
        self.statistics: list[np.ndarray] = []
        self.fits: list = []

    def __call__(self, w: int):
        from farm.stitch import chain_fits, overlap_statistics

        if w >= len(self.fits):
            logs = self.ready(w)
            for window, log in zip(self.plan.windows[len(self.statistics) : w + 1], logs[len(self.statistics) : w + 1]):
                if "lab" in log:
                    self.statistics.append(np.array(log["lab"], dtype=np.float64))
                    continue
                with np.load(self.plan.local_window(window)) as stored:
                    self.statistics.append(stored["lab"] if "lab" in stored.files
                                           else overlap_statistics(self.plan.windows, window.index, stored["frames"]))
            self.fits = chain_fits(self.statistics)
        return self.fits[w]
