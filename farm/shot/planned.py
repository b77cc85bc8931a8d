"""`ShotPlan`: a planned shot, everything the window, segment and finish stages need (made by
`farm.shot.plan.plan_shot`), and where each of its working files is, here and in the store."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path

import numpy as np

from farm.backends.base import WindowRequest
from farm.config import FarmConfig
from farm.pose.extract import PoseSequence
from farm.provenance.watermark import MIN_SIDE, watermark_code
from farm.shot.tools import cache_root, storage_for
from farm.shot.types import ARTIFACTS, SEGMENTS, TAKE, WINDOWS, Shot
from farm.storage import Storage
from farm.types import Canvas, Character
from farm.windows import Segment, Window, plan_segments


@dataclass(kw_only=True)
class PlanHead:
    """What a campaign's driver reads of a planned shot: where it goes, its windows and segments,
    its record so far. The rest of the plan (character image, poses, targets) stays in Ray's object
    store for the workers, so the driver's memory does not grow with what each shot carries.

    frame_count: output frames; chains: window.mode=chained, the runs [first, stop) of windows that
    each continue from the one before (empty for parallel windows); condition_frames: how many
    frames of the window before a chained window continues from.
    """

    shot: Shot
    cfg: FarmConfig
    shot_id: str
    content_key: str
    folder: Path
    uri: str
    record: dict
    timings: dict
    windows: list[Window]
    frame_count: int
    chains: list[tuple[int, int]] = field(default_factory=list)
    condition_frames: int = 1

    def previous_window(self, window: Window) -> Window | None:
        """The window this one continues from (window.mode=chained), None when it starts a chain or
        windows are independent."""
        if any(first < window.index < stop for first, stop in self.chains):
            return self.windows[window.index - 1]
        return None

    def next_window(self, window: Window) -> Window | None:
        """The window that continues from this one (window.mode=chained), if any."""
        if any(first <= window.index < stop - 1 for first, stop in self.chains):
            return self.windows[window.index + 1]
        return None

    def held_frames(self, window: Window) -> int:
        """Frames at the start of the window that re-make the window before it (chained): the
        stitch keeps the earlier window's frames there."""
        return self.condition_frames if self.previous_window(window) is not None else 0

    @property
    def segments(self) -> list[Segment]:
        """The runs of windows that are stitched and encoded on their own, then joined."""
        return plan_segments(self.windows, self.frame_count, self.cfg.output.segment_frames)

    @property
    def remote(self) -> bool:
        return Storage.is_remote(self.uri)

    def window_file(self, window: Window) -> Path:
        """Checkpoint of one rendered window, named by its content: a rerun after a crash finds it."""
        key = hashlib.sha256(f"{self.content_key}:{window.start}:{window.end}:{window.render_length}".encode()).hexdigest()[:16]
        return self.folder / WINDOWS / f"{window.index:05d}-{key}.npz"

    def window_uri(self, window: Window) -> str:
        return Storage.join(self.uri, WINDOWS, self.window_file(window).name)

    def has_window(self, window: Window) -> bool:
        """A checkpoint exists (for s3:// outputs: in the store, wherever it was rendered)."""
        if self.remote:  # only an uploaded checkpoint counts: a local one may have failed to upload
            return storage_for(self.cfg).exists(self.window_uri(window))
        return self.window_file(window).exists()


@dataclass(kw_only=True)
class ShotPlan(PlanHead):
    """A shot ready to render: everything the window workers and the final stitch need.

    targets: (T, 15, 3) retargeted joints on the canvas; layers: (T, 4) limb order; behind: (T,)
    limbs behind the torso; index: (T,) source frame of each output frame.
    """

    character: Character
    canvas: Canvas
    targets: np.ndarray
    layers: np.ndarray
    behind: np.ndarray
    fps: Fraction
    audio: Path | None
    driving: PoseSequence
    index: np.ndarray
    motion: Path  # the motion video, local to the node that planned the shot
    license: Path | None = None  # rights.license_file, local to the node that planned the shot
    detector_sees: bool = True  # mediapipe finds the character's pose in its image: QA re-detects it on the output
    run: str = field(default_factory=lambda: secrets.token_hex(6))  # this render's take: folder/.take-<run>/

    def head(self) -> PlanHead:
        """The part of the plan the campaign's driver reads (the arrays stay with the workers)."""
        return PlanHead(**{f.name: getattr(self, f.name) for f in fields(PlanHead)})

    @property
    def take(self) -> Path:
        """Where the finish makes this render's published files; moved into the folder when committed."""
        return self.folder / f"{TAKE}{self.run}"

    def request(self, window: Window) -> WindowRequest:
        return WindowRequest(
            shot_id=self.shot_id, start=window.start, end=window.end,
            targets=self.targets[window.start : window.end], layers=self.layers[window.start : window.end],
            prompt=self.shot.prompt or self.cfg.prompt, seed=self.cfg.seed,
            options={"limbs_behind_torso": self.behind[window.start : window.end]},
        )

    def segment_file(self, segment: Segment, suffix: str = ".mp4") -> Path:
        """The segment's video, or with suffix QA_SUFFIX what QA measured on it."""
        return self.folder / SEGMENTS / f"{segment.index:04d}{suffix}"

    def segment_uri(self, segment: Segment, suffix: str = ".mp4") -> str:
        return Storage.join(self.uri, SEGMENTS, self.segment_file(segment, suffix).name)

    def local_window(self, window: Window) -> Path:
        """The window's checkpoint on this machine, downloaded from the store if another node made it."""
        return self._on_this_node(self.window_file(window), self.window_uri(window))

    def window_frames(self, window: Window) -> np.ndarray:
        with np.load(self.local_window(window)) as stored:
            return stored["frames"]

    def continuation(self, window: Window) -> np.ndarray | None:
        """The frames a chained window continues from: the `condition_frames` frames of the window
        before it where it starts, as that window handed them over at the size it rendered them
        (checkpoint key "handoff"), else from its canvas-size frames. None when it continues from
        nothing."""
        before = self.previous_window(window)
        if before is None:
            return None
        with np.load(self.local_window(before)) as stored:
            if "handoff" in stored.files:
                return stored["handoff"]
            at = window.start - before.start  # (the last window, shifted back to end the shot, overlaps more)
            return stored["frames"][at : at + max(1, self.condition_frames)]

    def artifact_file(self, name: str) -> Path:
        """A published file made before the finish (e.g. the pose preview), until the finish takes it."""
        return self.folder / ARTIFACTS / name

    def artifact_uri(self, name: str) -> str:
        return Storage.join(self.uri, ARTIFACTS, name)

    def local_artifact(self, name: str) -> Path:
        """That file on this machine, downloaded from the store if another node made it."""
        return self._on_this_node(self.artifact_file(name), self.artifact_uri(name))

    def local_segment(self, segment: Segment, suffix: str = ".mp4") -> Path:
        """The segment's file on this machine, downloaded from the store if another node made it."""
        return self._on_this_node(self.segment_file(segment, suffix), self.segment_uri(segment, suffix))

    def local_motion(self) -> Path:
        """The motion video on this machine (fetched into the input cache on another node)."""
        if self.motion.exists():
            return self.motion
        return storage_for(self.cfg).fetch(str(self.shot.motion), cache_root(self.cfg) / "inputs")

    def local_license(self) -> Path | None:
        """The licence document on this machine (fetched into the input cache on another node)."""
        if self.license is None or self.license.exists():
            return self.license
        return storage_for(self.cfg).fetch(str(self.shot.rights["license_file"]), cache_root(self.cfg) / "inputs")

    @property
    def watermark(self) -> int | None:
        """The code every frame carries, None when the frames are left unmarked (see _provenance)."""
        return None if unmarked(self.cfg, self.canvas) else watermark_code(self.shot_id)

    def driving_at(self, index: np.ndarray) -> PoseSequence:
        """The driving pose on the source frames `index` (one per output frame)."""
        at = index - self.driving.start
        d = self.driving
        return PoseSequence(body=d.body[at], left_hand=d.left_hand[at], right_hand=d.right_hand[at], face=d.face[at],
                            fps=d.fps, width=d.width, height=d.height, start=int(index.min()))

    def _on_this_node(self, path: Path, uri: str) -> Path:
        """A working file of the shot (checkpoint, segment) here, fetched from the store when another node made it."""
        if path.exists() or not self.remote:
            return path
        return storage_for(self.cfg).fetch(uri, path.parent / "fetched")


def unmarked(cfg: FarmConfig, canvas: Canvas) -> str | None:
    """Why the frames carry no watermark, None when they do."""
    if not cfg.provenance.watermark:
        return "provenance.watermark=false"
    if min(canvas.width, canvas.height) < MIN_SIDE:
        return f"the frame's short side is under {MIN_SIDE} px, too small for the mark to survive encoding"
    return None
