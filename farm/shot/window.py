"""Step 7 of a shot: render one window with a loaded backend and write its checkpoint."""
from __future__ import annotations

import time

import numpy as np

from farm.backends.base import Backend
from farm.pose.extract import PoseSequence
from farm.shot.plan import ShotPlan
from farm.shot.tools import storage_for
from farm.stitch import overlap_statistics
from farm.storage.local import write_atomically
from farm.windows import Window


def render_window(backend: Backend, plan: ShotPlan, window: Window, *, worker: str = "local") -> dict:
    """Render the window (unless its checkpoint exists) and write the checkpoint. The backend must
    have been prepared for this plan. Returns the window's log entry."""
    path = plan.window_file(window)
    if plan.has_window(window):
        return {**window.to_dict(), "reused": True}
    started = time.perf_counter()
    request = plan.request(window)
    before = plan.previous_window(window)
    if before is not None:  # chained: continue from the window before, on the frames where this one starts
        at = window.start - before.start  # (the last window, shifted back to end the shot, overlaps more)
        request.previous = plan.window_frames(before)[at : at + max(1, backend.spec.condition_frames)]
    if backend.spec.needs_reference:
        request.reference, request.driving = _reference_for(plan, window)
    result = backend.render_window(request)
    error = None
    if result.drawn_joints is not None:
        error = float(np.linalg.norm(result.drawn_joints - request.targets[..., :2], axis=-1).max())
    seconds = time.perf_counter() - started
    frames = result.frames[: window.length]
    stored = {"frames": frames}
    if result.drawn_joints is not None:  # where the backend drew the rig: QA measures it when the detector cannot
        stored["joints"] = result.drawn_joints[: window.length].astype(np.float32)
    if plan.cfg.window.colour == "lab":  # what the stitch fits colours with, measured here in parallel
        stored["lab"] = overlap_statistics(plan.windows, window.index, frames)
    write_atomically(path, lambda out: np.savez(out, **stored), str(path))
    if plan.remote:  # other nodes, and a rerun on another machine, find it in the store
        storage_for(plan.cfg).put_file(path, plan.window_uri(window))
    log = {
        **window.to_dict(), "reused": False, "worker": worker,
        "seconds": round(seconds, 3), "rig_error_px_max": None if error is None else round(error, 3),
    }
    if "lab" in stored:
        log["lab"] = stored["lab"].tolist()
    if hasattr(backend, "describe"):  # the model's id, revision or content hash, dtype, device
        log["model"] = backend.describe()
    return log


def _reference_for(plan: ShotPlan, window: Window) -> tuple[np.ndarray, PoseSequence]:
    """The reference video's frames behind the window's output frames, and the driving pose on them."""
    from farm.media.decode import iter_frames

    index = plan.index[window.start : window.end]
    first, last = int(index.min()), int(index.max())
    decoded = list(iter_frames(plan.local_motion(), first, last + 1))
    frames = np.stack([decoded[i - first] for i in index])
    return frames, plan.driving_at(index)
