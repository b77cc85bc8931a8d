"""The pose a character should show, in the OpenPose body layout: the retargeted rig, with the
points the rig does not have (eyes, ears, toes, hands) carried over from the performer by the
similarity transform of the bone they hang from (head, shin, forearm), so that the character's own
proportions hold. Drawn for pose-conditioned models (farm.backends.wan_animate) and measured
against by QA (farm.qa.measure)."""
from __future__ import annotations

import numpy as np

from farm.pose.extract import PoseSequence
from farm.pose.openpose import coco18_from_body
from farm.rig import JOINT_INDEX, VISIBLE

# Body points: OpenPose-18 then left toe, right toe. The rig joint behind each (-1: carried over
# from the performer: eyes and ears with the head, toes with the shin).
_BODY20_FROM_RIG = (2, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, -1, -1, -1, -1, -1, -1)
_EYES_EARS = (14, 15, 16, 17)


def transfer_pose(targets: np.ndarray, driving: PoseSequence) -> tuple[np.ndarray, np.ndarray]:
    """The pose to draw, on the canvas: (n, 20, 3) body (x, y, score) and (n, 2, 21, 3) left and
    right hands. targets: (n, 15, 3) rig joints on the canvas; driving: the performer's pose on the
    same n frames (source pixels)."""
    n = len(targets)
    body = np.zeros((n, 20, 3), np.float32)
    for k, j in enumerate(_BODY20_FROM_RIG):
        if j >= 0:
            body[:, k] = targets[:, j]
    rig = driving.rig()
    source = driving.body[..., [0, 1, 3]]
    j = JOINT_INDEX
    moved = _follow(coco18_from_body(source)[:, _EYES_EARS], rig, targets, j["neck"], j["head"])
    body[:, _EYES_EARS] = moved
    body[:, 18] = _follow(source[:, [31]], rig, targets, j["left_knee"], j["left_ankle"])[:, 0]
    body[:, 19] = _follow(source[:, [32]], rig, targets, j["right_knee"], j["right_ankle"])[:, 0]
    hands = np.stack([
        _follow(driving.left_hand, rig, targets, j["left_elbow"], j["left_wrist"]),
        _follow(driving.right_hand, rig, targets, j["right_elbow"], j["right_wrist"]),
    ], axis=1)
    return body, hands


def _follow(points: np.ndarray, source: np.ndarray, target: np.ndarray, a: int, b: int) -> np.ndarray:
    """(n, k, 3) points carried from the source bone a -> b to the target bone a -> b (rotation and
    scale about b). Frames where either bone is unseen lose the points (score 0)."""
    src = source[:, b, :2] - source[:, a, :2]
    dst = target[:, b, :2] - target[:, a, :2]
    src_len, dst_len = np.linalg.norm(src, axis=-1), np.linalg.norm(dst, axis=-1)
    ok = (src_len > 1e-3) & (dst_len > 1e-3) & (source[:, [a, b], 2].min(axis=1) >= VISIBLE) & (target[:, [a, b], 2].min(axis=1) > 0)
    scale = np.where(ok, dst_len / np.maximum(src_len, 1e-3), 0.0)
    angle = np.arctan2(dst[:, 1], dst[:, 0]) - np.arctan2(src[:, 1], src[:, 0])
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    rel = points[..., :2] - source[:, None, b, :2]
    out = np.empty(points.shape[:-1] + (3,), np.float32)
    out[..., 0] = target[:, None, b, 0] + cos[:, None] * rel[..., 0] - sin[:, None] * rel[..., 1]
    out[..., 1] = target[:, None, b, 1] + sin[:, None] * rel[..., 0] + cos[:, None] * rel[..., 1]
    out[..., 2] = np.where(ok[:, None], points[..., -1], 0.0)
    return out
