"""Steps 8-9 for one segment of a shot: stitch its windows and encode them; QA measures the frames on the way."""
from __future__ import annotations

import time

import numpy as np

from farm.shot.planned import ShotPlan
from farm.shot.tools import storage_for
from farm.shot.types import QA_SUFFIX
from farm.storage.local import write_atomically
from farm.windows import Segment


def encode_segment(plan: ShotPlan, segment: Segment, window_logs: list[dict], *, worker: str = "local") -> dict:
    """Stitch the segment's windows (colour-fitted along the whole chain, see
    farm.stitch.chain_fits) into frames [segment.start, segment.end) and encode them, without audio,
    to the segment's file; uploaded for s3:// outputs. Returns the segment's log entry.

    x264 runs on one thread: its output depends on its thread count, and a shot's video must not
    depend on the machine (segments of a long video encode side by side on the farm instead).
    Every frame carries the shot's watermark (provenance.watermark) before it is measured and encoded."""
    from farm.media.encode import VideoWriter
    from farm.provenance.watermark import embed
    from farm.qa.measure import Appearance, FrameMeter
    from farm.qa.track import Texture
    from farm.stitch import Stitcher

    started = time.perf_counter()
    cfg, windows, code = plan.cfg, plan.windows, plan.watermark
    fits = _colour_fits(plan, window_logs[: segment.stop]) if cfg.window.colour == "lab" else [None] * segment.stop
    stitcher = Stitcher(len(plan.targets), cfg.window.blend, cfg.window.colour, start=segment.start)
    if segment.first > 0:
        before = windows[segment.first - 1]
        stitcher.prime(before, plan.window_frames(before), fits[before.index])
    path = plan.segment_file(segment)
    path.parent.mkdir(parents=True, exist_ok=True)
    texture = None if plan.detector_sees else Texture.of(plan.character)  # its pose is tracked by its texture
    meter = FrameMeter(Appearance.of(plan.character), plan.targets[segment.start : segment.end],
                       detect_pose=plan.detector_sees, texture=texture)
    with VideoWriter(path, fps=plan.fps, width=plan.canvas.width, height=plan.canvas.height,
                     crf=cfg.output.crf, preset=cfg.output.preset, threads=1) as writer, meter:
        for w in range(segment.first, segment.stop):
            next_start = windows[w + 1].start if w + 1 < len(windows) else None
            held = plan.held_frames(windows[w])
            for frame in stitcher.add(windows[w], plan.window_frames(windows[w]), next_start, fits[w], held=held):
                if code is not None:
                    frame = embed(frame, code)
                writer.write(frame)
                meter.add(frame)  # QA measures the frames as they are encoded, segments side by side
        stitcher.finish(segment.end)
    measured = plan.segment_file(segment, QA_SUFFIX)
    seams = np.array(stitcher.seams, np.float64).reshape(-1, 2)  # (window, seam score) of the joins made here
    write_atomically(measured, lambda out: np.savez(out, **meter.result(), seams=seams), str(measured))
    if plan.remote:
        storage_for(cfg).put_file(path, plan.segment_uri(segment))
        storage_for(cfg).put_file(measured, plan.segment_uri(segment, QA_SUFFIX))
    return {"index": segment.index, "start": segment.start, "end": segment.end, "worker": worker,
            "seconds": round(time.perf_counter() - started, 3), "measure_seconds": round(meter.seconds, 3)}


def _colour_fits(plan: ShotPlan, window_logs: list[dict]) -> list:
    """The colour fit of each window in `window_logs` (the first ones of the shot, in order), from
    the overlap statistics its worker measured; read back from the checkpoint for a window reused
    from an earlier run, or measured here for a checkpoint that predates them."""
    from farm.stitch import chain_fits, overlap_statistics

    statistics = []
    for window, log in zip(plan.windows, window_logs):
        if "lab" in log:
            statistics.append(np.array(log["lab"], dtype=np.float64))
            continue
        with np.load(plan.local_window(window)) as stored:
            statistics.append(stored["lab"] if "lab" in stored.files else overlap_statistics(plan.windows, window.index, stored["frames"]))
    return chain_fits(statistics)
