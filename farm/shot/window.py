"""Step 7 of a shot: render one window with a loaded backend and write its checkpoint."""
from __future__ import annotations

import os
import time

import numpy as np

from farm.backends.base import Backend
from farm.config import SEED_MAX
from farm.pose.extract import PoseSequence
from farm.shot.planned import ShotPlan
from farm.shot.tools import storage_for
from farm.stitch import overlap_statistics
from farm.storage.local import write_atomically
from farm.windows import Window


def render_window(backend: Backend, plan: ShotPlan, window: Window, *, worker: str = "local",
                  take: int = 0, best: float | None = None, fix: bool = False) -> dict:
    """Render the window (unless its checkpoint exists) and write the checkpoint. The backend must
    have been prepared for this plan. Returns the window's log entry: its generator seconds and
    the GPUs and CPU cores its worker held meanwhile (the backend's spec) are what it cost.

    With qa.retakes or qa.abort_below the window is checked as well (farm.qa.window; log "check").
    take > 0 is a re-take (farm.qa.window.Takes): rendered with the next seed (and with `fix` the
    prompt asks for consistency), it replaces the checkpoint only when its check is better than
    `best`, the best take's so far, so the checkpoint always holds the window's best take."""
    from farm.qa.window import check_window, checking, with_consistency

    path = plan.window_file(window)
    if take == 0 and plan.has_window(window):
        return {**window.to_dict(), "reused": True}
    started, began = time.perf_counter(), time.time()
    request = plan.request(window)
    request.seed = (request.seed + take) % (SEED_MAX + 1)  # a re-take: the shot's next seeds
    if fix:
        request.prompt = with_consistency(request.prompt)
    request.previous = plan.continuation(window)  # chained: the frames of the window before where this one starts
    after = plan.next_window(window)
    request.handoff_at = None if after is None else after.start - window.start
    if backend.spec.needs_reference:
        request.reference, request.driving = _reference_for(plan, window, backend.spec.reference_area)
    result = backend.render_window(request)
    error = None
    if result.drawn_joints is not None:
        error = float(np.linalg.norm(result.drawn_joints - request.targets[..., :2], axis=-1).max())
    seconds = time.perf_counter() - started
    frames = result.frames[: window.length]
    stored = {"frames": frames}
    if after is not None and result.handoff is not None:  # what the next window of the chain continues from
        stored["handoff"] = result.handoff
    if plan.cfg.window.colour == "lab":  # what the stitch fits colours with, measured here in parallel
        stored["lab"] = overlap_statistics(plan.windows, window.index, frames)
    made = path if take == 0 else path.with_name(f"{path.stem}.take{take}{path.suffix}")
    write_atomically(made, lambda out: np.savez(out, **stored), str(made))
    check = check_window(plan, window, frames) if checking(plan.cfg.qa) else None
    kept = take == 0 or check["badness"] < best
    if made != path:
        if kept:
            os.replace(made, path)
        else:
            made.unlink()
    if kept and plan.remote:  # other nodes, and a rerun on another machine, find it in the store
        storage_for(plan.cfg).put_file(path, plan.window_uri(window))
    log = {
        **window.to_dict(), "reused": False, "worker": worker,
        "started": round(began, 3), "seconds": round(seconds, 3), "gpus": backend.spec.num_gpus, "cpus": backend.spec.num_cpus,
        "rig_error_px_max": None if error is None else round(error, 3),
    }
    if check is not None:
        log.update(take=take, seed=request.seed, prompt_fix=fix, check=check, deterministic=backend.spec.deterministic)
    if "lab" in stored:
        log["lab"] = stored["lab"].tolist()
    if result.prompts is not None:
        log["prompts"] = result.prompts
    if hasattr(backend, "describe"):  # the model's id, revision or content hash, dtype, device
        log["model"] = backend.describe()
    return log


def _reference_for(plan: ShotPlan, window: Window, area: int | None) -> tuple[np.ndarray, PoseSequence]:
    """The reference video's frames behind the window's output frames, shrunk to about `area`
    pixels as each is decoded when they are larger (one small copy of the window's frames, however
    large the video), and the driving pose on them (in the source's pixels)."""
    from farm.media.decode import iter_frames

    index = plan.index[window.start : window.end]
    first, last = int(index.min()), int(index.max())
    size = _shrunk_size(plan.driving.width, plan.driving.height, area)
    decoded = [_shrink(frame, size) for frame in iter_frames(plan.local_motion(), first, last + 1)]
    frames = np.stack([decoded[i - first] for i in index])
    return frames, plan.driving_at(index)


def _shrunk_size(width: int, height: int, area: int | None) -> tuple[int, int]:
    """(w, h) at the aspect width / height with about `area` pixels, or (width, height) when that
    is no larger."""
    if area is None or width * height <= area:
        return width, height
    scale = (area / (width * height)) ** 0.5
    return max(1, round(width * scale)), max(1, round(height * scale))


def _shrink(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
