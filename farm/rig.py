"""The 15-joint 2D body rig every stage speaks.

Driving poses (from mediapipe's 33 body landmarks), character skeletons (detected or read from a
skeleton file) and retargeted targets are all expressed on this rig, so retargeting, skinning and
metrics never care where a pose came from.

Coordinates are image pixels, x to the right, y down, origin at the top-left corner of the image.
"Left" and "right" are the person's own sides (a person facing the camera has its right side on the
image's left), as in mediapipe and AnimatedDrawings.
"""
from __future__ import annotations

import numpy as np

JOINTS: tuple[str, ...] = (
    "pelvis",
    "neck",
    "head",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
)
# Confidence from which a detected joint counts as seen (mediapipe visibility, rig confidence).
VISIBLE = 0.5

JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINTS)}

# Parent of each joint (-1 for the root). Parents always come before children, so a forward pass
# over JOINTS cascades outward from the pelvis.
PARENTS: tuple[int, ...] = (-1, 0, 1, 1, 3, 4, 1, 6, 7, 0, 9, 10, 0, 12, 13)

# Bones are named by their child joint: bone k goes from PARENTS[k] to k, for k = 1..14.
BONES: tuple[tuple[int, int], ...] = tuple((PARENTS[k], k) for k in range(1, len(JOINTS)))

# Body parts, for layering and visibility decisions.
ARM_JOINTS = {"right": (3, 4, 5), "left": (6, 7, 8)}
LEG_JOINTS = {"right": (9, 10, 11), "left": (12, 13, 14)}

# mediapipe Pose (33 landmarks) indices for each rig joint; pelvis and neck are midpoints.
MEDIAPIPE_BODY: dict[str, tuple[int, ...]] = {
    "pelvis": (23, 24),
    "neck": (11, 12),
    "head": (0,),
    "right_shoulder": (12,),
    "right_elbow": (14,),
    "right_wrist": (16,),
    "left_shoulder": (11,),
    "left_elbow": (13,),
    "left_wrist": (15,),
    "right_hip": (24,),
    "right_knee": (26,),
    "right_ankle": (28,),
    "left_hip": (23,),
    "left_knee": (25,),
    "left_ankle": (27,),
}

# AnimatedDrawings char_cfg.yaml joint names -> rig joints. AD's "neck" sits on the nose and its
# "torso" between the shoulders; "root" and "hip" coincide at the pelvis.
ANIMATED_DRAWINGS_NAMES: dict[str, str] = {
    "hip": "pelvis",
    "torso": "neck",
    "neck": "head",
    "right_shoulder": "right_shoulder",
    "right_elbow": "right_elbow",
    "right_hand": "right_wrist",
    "left_shoulder": "left_shoulder",
    "left_elbow": "left_elbow",
    "left_hand": "left_wrist",
    "right_hip": "right_hip",
    "right_knee": "right_knee",
    "right_foot": "right_ankle",
    "left_hip": "left_hip",
    "left_knee": "left_knee",
    "left_foot": "left_ankle",
}


def from_mediapipe(body: np.ndarray) -> np.ndarray:
    """Map mediapipe body landmarks to the rig.

    body: (..., 33, C) with x, y in pixels first and the confidence last (C >= 3).
    Returns (..., 15, 3): x, y, confidence; a midpoint joint takes the lower confidence of its two.
    """
    out = np.empty(body.shape[:-2] + (len(JOINTS), 3), dtype=np.float32)
    for j, name in enumerate(JOINTS):
        idx = list(MEDIAPIPE_BODY[name])
        out[..., j, :2] = body[..., idx, :2].mean(axis=-2)
        out[..., j, 2] = body[..., idx, -1].min(axis=-1)
    return out


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """Lengths of the 14 bones. joints: (..., 15, >=2) -> (..., 14)."""
    parents = np.array([p for p, _ in BONES])
    children = np.array([c for _, c in BONES])
    return np.linalg.norm(joints[..., children, :2] - joints[..., parents, :2], axis=-1)
