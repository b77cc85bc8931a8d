"""Automatic re-takes (qa.retakes, qa.abort_below): a window is judged as soon as it is rendered.

`check_window` measures one window's frames as the shot's are measured (farm.qa.measure: the pose
re-detected or texture-tracked against the target, the appearance against the character image,
the jitter) and, for a window that continues another (chained), the seam with the frames it
continues; `verdict` then applies the shot's own qa.* thresholds. Independent (parallel) windows
are not checked for seams here: their neighbours may not be rendered yet, and what is retaken must
not depend on which window a worker happened to finish first. The shot's stitched video is
still judged as a whole (max_seam_score) when it is finished.

`Takes` is a shot's bookkeeping, the same on the campaign's driver and in `farm render`'s process:
a window failing its check is rendered again with the next seed while the shot has re-takes left
(qa.retakes is per shot), and with the prompt asking for consistency when its appearance drifted;
of a window's takes the best one is kept (the checkpoint the stitch reads is always the best so
far, see farm.shot.window.render_window) and the manifest lists every take and why it was made.
A window whose kept take has a pose_pck below qa.abort_below stops its shot there.
"""
from __future__ import annotations

import time

import numpy as np

from farm.errors import FarmError
from farm.windows import Window

# Appended to the prompt of a take made for appearance drift (backends that read a prompt).
CONSISTENCY = "Keep the same face, hairstyle, outfit and body proportions throughout the entire video."
_DRIFT = ("appearance_drift", "appearance_ssim")
_SHOWN = ("pose_source", "pose_pck", "pose_oks", "joint_pck", "joint_pck_worst", "pose_detected", "jitter", "appearance_drift",
          "appearance_ssim", "seam_score")


def checking(qa) -> bool:
    """Windows are checked as they are rendered (qa.retakes or qa.abort_below is set)."""
    return bool(qa.retakes) or qa.abort_below is not None


def with_consistency(prompt: str | None) -> str:
    return f"{prompt.rstrip()} {CONSISTENCY}" if prompt and prompt.strip() else CONSISTENCY


def check_window(plan, window: Window, frames: np.ndarray) -> dict:
    """The window's metrics (those of the shot's manifest), the reasons it fails qa.* (empty: it
    passes) and its badness (0 when it passes; the summed relative excess over the failed
    thresholds, which ranks its takes)."""
    from farm.qa.measure import Appearance, FrameMeter, coco17_target, shot_quality, verdict
    from farm.qa.metrics import join_seam
    from farm.qa.track import Texture

    started = time.perf_counter()
    n = len(frames)
    targets = plan.targets[window.start : window.start + n]
    texture = None if plan.detector_sees else Texture.of(plan.character)
    with FrameMeter(Appearance.of(plan.character), targets, detect_pose=plan.detector_sees, texture=texture) as meter:
        for frame in frames:
            meter.add(frame)
    part = meter.result()
    before = plan.previous_window(window)
    if before is not None:  # chained: the frames it continues are final (the chain waited for them)
        tail = plan.window_frames(before)[window.start - before.start :]
        part["seams"] = np.array([[window.index, join_seam(tail, frames)]])
    target = coco17_target(targets, plan.driving_at(plan.index[window.start : window.start + n]))
    alone = Window(window.index, 0, n, n)
    quality = shot_quality([part], [alone], target, detector_sees_character=plan.detector_sees,
                           frame_size=(plan.canvas.width, plan.canvas.height))
    metrics = {key: quality.summary.get(key) for key in _SHOWN}
    if before is None:
        metrics["seam_score"] = None
    reasons = verdict(metrics, [], plan.cfg.qa)
    return {**metrics, "reasons": reasons, "badness": round(badness(metrics, plan.cfg.qa), 6),
            "seconds": round(time.perf_counter() - started, 3)}


def badness(metrics: dict, qa) -> float:
    """0 for a window within every threshold; else the sum over the thresholds it fails of how far
    past the limit it is, relative to the limit."""
    from farm.qa.measure import THRESHOLDS

    total = 0.0
    for key, metric, at_least in (*THRESHOLDS, ("min_pose_detected", "pose_detected", True)):
        limit, value = getattr(qa, key), metrics.get(metric)
        if limit is None or value is None:
            continue
        excess = (limit - value) if at_least else (value - limit)
        if excess > 0:
            total += excess / max(abs(limit), 1e-3)
    return total


class Takes:
    """The takes of one shot's windows. `add` each rendered take's log; it returns what the next
    take of that window is rendered with (take, best, fix: the keyword arguments of render_window),
    or None when the window is settled, then `settle` gives the window's log for the manifest and
    `stopped` whether the shot stops there."""

    def __init__(self, qa, shot: str, windows: int) -> None:
        self.qa, self.shot, self.windows = qa, shot, windows
        self.left = qa.retakes  # re-takes the shot may still make
        self.made = 0
        self.by_window: dict[int, list[dict]] = {}
        self.settled = 0

    def add(self, w: int, log: dict) -> dict | None:
        takes = self.by_window.setdefault(w, [])
        takes.append(log)
        check = log.get("check")
        if check is None or not check["reasons"] or self.left <= 0 or log.get("deterministic"):
            return None  # passed, not checked (a checkpoint reused), no re-takes left, or a seed changes nothing
        self.left -= 1
        self.made += 1
        fix = any(reason.split()[0] in _DRIFT for t in takes for reason in t["check"]["reasons"])
        return {"take": len(takes), "best": self._best(takes)["check"]["badness"], "fix": fix}

    def settle(self, w: int) -> dict:
        """The window's log: its best take's (the one whose frames are in its checkpoint), with the
        generator seconds of all its takes and, when it was checked, every take and why."""
        takes = self.by_window.pop(w)
        self.settled += 1
        if "check" not in takes[-1]:
            return takes[-1]
        best = self._best(takes)
        listed = []
        for t in takes:
            check = t["check"]
            listed.append({"take": t["take"], "seed": t["seed"], "prompt_fix": t.get("prompt_fix", False), "kept": t is best,
                           "worker": t.get("worker"), "node": t.get("node"), "seconds": t.get("seconds"),
                           **{k: v for k, v in check.items() if k != "seconds"}, "check_seconds": check["seconds"]})
        log = {k: v for k, v in best.items() if k != "check"}
        # What the window cost: every take, checks included (its worker held the GPU meanwhile).
        log["seconds"] = round(sum(t.get("seconds", 0.0) + t["check"]["seconds"] for t in takes), 3)
        log["takes"] = listed
        return log

    def stopped(self, w: int, log: dict) -> FarmError | None:
        """qa.abort_below: the shot stops at a window whose kept take lost the pose."""
        kept = next((t for t in log.get("takes", []) if t["kept"]), None)
        floor = self.qa.abort_below
        if floor is None or kept is None or kept.get("pose_pck") is None or kept["pose_pck"] >= floor:
            return None
        return FarmError(f"shot {self.shot} window {w} (frames {log['start']}-{log['end'] - 1})",
                         f"pose_pck {kept['pose_pck']:.2f} is below qa.abort_below ({floor:g}) after {len(log['takes'])} "
                         f"take(s): the shot was stopped there with {self.settled} of {self.windows} windows rendered "
                         f"(reasons: {'; '.join(kept['reasons'])})",
                         "the character does not follow the motion there: check its skeleton against the motion (render "
                         "the shot without qa.abort_below and read its report), or lower qa.abort_below")

    @staticmethod
    def _best(takes: list[dict]) -> dict:
        return min(takes, key=lambda t: t["check"]["badness"])  # the first of equals: the earliest take
