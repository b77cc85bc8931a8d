"""What a generator backend is: the contract between the farm and any model that renders windows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from farm.types import Canvas, Character


@dataclass(frozen=True)
class BackendSpec:
    """What the farm needs to know about a backend before it plans any work.

    window_length / window_overlap: default window plan in output frames.
    frame_multiple: window lengths must be `frame_multiple * k + 1` (Wan: 4); 1 means any length.
    can_chain: the backend can condition a window on the last frames of the previous one.
    condition_frames: how many of those frames it takes (window.mode=chained).
    num_gpus: GPUs one worker holding the model needs (0 for CPU backends).
    num_cpus: CPU cores that worker keeps busy while it renders a window (what a window's cost is
    counted in, with num_gpus; the runtime's scheduling is its own, farm.runtime.campaign).
    max_side: largest output side in pixels the backend supports.
    needs_reference: windows come with the reference video's frames and the driving pose
    (WindowRequest.reference, .driving), for models conditioned on the performer's face or scene.
    reference_area: pixels per frame the backend uses those frames at; larger frames are shrunk to
    it (at their own aspect) as they are decoded, so a 4K video costs a window no more memory than
    the render size. None: as decoded.
    native_fps: the frame rate the model was trained at, the output's when output.fps is null
    (None: the reference video's own).
    window_mode: window.mode when the config leaves it null (parallel or chained).
    deterministic: the same request always renders the same frames, whatever the seed (takes with
    other seeds, a campaign's `variants`, would all be the same video).
    source_type: what its frames are, as an IPTC digital source type (the C2PA label of the video):
    trainedAlgorithmicMedia for a model that makes every pixel.
    pose_parts: the parts of the performer's pose the backend reads (of farm.pose.extract.POSE_PARTS:
    body, hands, face); the pose stage tracks only these, as the body alone is more than twice as
    fast as body, hands and face (mediapipe Pose against Holistic). The body is always tracked.
    """

    name: str
    version: str
    window_length: int
    window_overlap: int
    frame_multiple: int = 1
    can_chain: bool = False
    condition_frames: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    max_side: int = 4096
    needs_reference: bool = False
    reference_area: int | None = None
    native_fps: float | None = None
    window_mode: str = "parallel"
    deterministic: bool = False
    source_type: str = "trainedAlgorithmicMedia"
    pose_parts: tuple[str, ...] = ("body", "hands", "face")


@dataclass
class WindowRequest:
    """One window of one shot to render.

    start, end: output frame range [start, end).
    targets: (end - start, 15, 3) float32 target joints in canvas pixels, confidence last.
    layers: (end - start, 4) int order of the limbs per frame, back to front, as indices into
    ("right_arm", "left_arm", "right_leg", "left_leg"); the torso and head are drawn first.
    previous: (condition_frames, h, w, 3) uint8, the frames of the window before this one in its
    chain (window.mode=chained) where this one starts, to continue from: at the size that window
    was rendered at when it handed them over (WindowResult.handoff), else at the canvas size; None
    for parallel windows and chain heads.
    handoff_at: where, in this window, the next window of its chain starts (None: no next window);
    a backend that renders at another size than the canvas returns its `condition_frames` frames
    from there at that size (WindowResult.handoff).
    reference: (end - start, h, w, 3) uint8 frames of the reference video behind each output frame,
    and driving: the performer's pose on them (a PoseSequence, source pixels), for backends whose
    spec says needs_reference; None otherwise.
    """

    shot_id: str
    start: int
    end: int
    targets: np.ndarray
    layers: np.ndarray
    prompt: str = ""
    seed: int = 0
    options: dict = field(default_factory=dict)
    previous: np.ndarray | None = None
    handoff_at: int | None = None
    reference: np.ndarray | None = None
    driving: Any = None


@dataclass
class WindowResult:
    """frames: (n, H, W, 3) uint8 RGB. drawn_joints: (n, 15, 2) where the backend put each joint,
    when it knows (the puppet does: it skins the rig with the same transforms as the mesh).
    handoff: (condition_frames, h, w, 3) uint8, the frames from request.handoff_at at the size the
    model rendered them, for the next window of the chain to continue from without a round trip
    through the canvas size. prompts: what the model was given as prompt and negative prompt, when
    the backend fills in its own defaults, for the manifest."""

    frames: np.ndarray
    drawn_joints: np.ndarray | None = None
    handoff: np.ndarray | None = None
    prompts: dict | None = None


class Backend(Protocol):
    spec: BackendSpec

    def prepare(self, character: Character, canvas: Canvas) -> None:
        """Per-shot set-up (mesh, binding, background); cheap to call again for the same inputs."""

    def render_window(self, request: WindowRequest) -> WindowResult:
        """Render one window; deterministic for a given request and seed."""
