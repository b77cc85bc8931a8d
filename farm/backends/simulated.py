"""SimulatedBackend: a stand-in for a GPU video model, for sizing a farm before paying for one.

It holds a GPU like Wan-Animate (num_gpus=1, 77-frame windows), takes the time a real model would
(`load_seconds` once per worker, `seconds_per_frame` per rendered frame, slept, not computed), and
draws a cheap frame: the target pose over the character's picture, tinted by the seed so takes with
other seeds differ as a sampling model's do. Started on a local Ray with fake GPUs
(`runtime.num_gpus=16`), a campaign behaves as it would on a GPU farm: the same queueing, the same
makespan, the same idle GPUs; only the frames are not worth watching.

Defaults from Wan2.2-Animate as published (A800, 480p, 20 sampling steps: about 10.8 s a step for a
77-frame segment, so 20 * 10.8 / 77 = 2.8 s a frame); the load time (reading ~80 GB of weights and
moving them to the GPU) is an assumption, about a minute on a local NVMe disk.
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from farm.backends.base import BackendSpec, WindowRequest, WindowResult
from farm.errors import FarmError
from farm.pose.draw import draw_rig_frame
from farm.types import Canvas, Character

SECONDS_PER_FRAME = 20 * 10.8 / 77
LOAD_SECONDS = 60.0


class SimulatedBackend:
    """seconds_per_frame: the simulated model's time per output frame of a window (overlap frames
    included, as a real model renders them); load_seconds: its time to load, once per worker."""

    # The pose parts Wan-Animate reads, though only the body is drawn: the pose stage of a
    # simulated campaign costs what the real model's would.
    spec = BackendSpec(name="simulated", version="1", window_length=77, window_overlap=8, frame_multiple=4,
                       num_gpus=1, num_cpus=0, deterministic=False, source_type="trainedAlgorithmicMedia",
                       pose_parts=("body", "hands", "face"))

    def __init__(self, *, seconds_per_frame: float = SECONDS_PER_FRAME, load_seconds: float = LOAD_SECONDS) -> None:
        for key, value in (("seconds_per_frame", seconds_per_frame), ("load_seconds", load_seconds)):
            if not isinstance(value, (int, float)) or not value >= 0:
                raise FarmError(f"backend.{key}", f"is {value!r}, not a number of seconds >= 0",
                                f"set backend.{key} to a time in seconds (see README, Large campaigns)")
        self.seconds_per_frame = float(seconds_per_frame)
        time.sleep(float(load_seconds))
        self._picture: np.ndarray | None = None

    def prepare(self, character: Character, canvas: Canvas) -> None:
        """The character's picture fitted to the canvas, the backdrop of every frame."""
        self._picture = cv2.resize(character.image, (canvas.width, canvas.height), interpolation=cv2.INTER_AREA)

    def render_window(self, request: WindowRequest) -> WindowResult:
        if self._picture is None:
            raise RuntimeError("SimulatedBackend.render_window called before prepare")
        count = request.end - request.start
        started = time.monotonic()
        # A seed-dependent tint: two takes of one shot are two different videos, as with a sampler.
        tint = np.random.default_rng(request.seed).integers(-24, 25, size=3)
        backdrop = np.clip(self._picture.astype(np.int16) + tint, 0, 255).astype(np.uint8)
        height, width = backdrop.shape[:2]
        frames = np.stack([draw_rig_frame(width, height, joints, background=backdrop) for joints in request.targets])
        time.sleep(max(0.0, count * self.seconds_per_frame - (time.monotonic() - started)))
        return WindowResult(frames=frames, drawn_joints=np.asarray(request.targets)[..., :2].astype(np.float32))
