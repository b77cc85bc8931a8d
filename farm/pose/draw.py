"""Pose images in the OpenPose look, the conditioning format pose-guided video models expect.

Body: COCO-18 skeleton, each of the 17 limbs and 18 joints in its own colour from an 18-step hue
wheel (red at the neck-right-shoulder limb), limbs at 60 % opacity. Hands: 20 bones coloured along
a full hue wheel, joints as blue dots. Face: OpenPose's 70 points as white dots. Line widths scale
with the image size (4 px body limbs at 512 px on the short side). Images are RGB uint8, (H, W, 3).
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from farm.pose.extract import FACE_POINTS as FACE_MESH_POINTS
from farm.pose.openpose import coco18_from_body, face70_from_mesh

MIN_CONFIDENCE = 0.3  # points below this are not drawn

# COCO-18 limbs as (joint, joint), in OpenPose's drawing order; limb k gets colour k.
COCO18_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
HAND_BONES: tuple[tuple[int, int], ...] = tuple(
    pair for finger in range(5)
    for pair in ((0, 4 * finger + 1), (4 * finger + 1, 4 * finger + 2),
                 (4 * finger + 2, 4 * finger + 3), (4 * finger + 3, 4 * finger + 4))
)
# Rig joint for each COCO-18 point (-1: the rig has no eyes or ears).
_COCO18_FROM_RIG = (2, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, -1, -1, -1, -1)


def _hue_wheel(n: int) -> list[tuple[int, int, int]]:
    return [tuple(round(255 * c) for c in colorsys.hsv_to_rgb(k / n, 1.0, 1.0)) for k in range(n)]


BODY_COLOURS = _hue_wheel(18)
HAND_COLOURS = _hue_wheel(len(HAND_BONES))
HAND_JOINT_COLOUR = (0, 0, 255)
FACE_COLOUR = (255, 255, 255)


def draw_pose_frame(
    width: int,
    height: int,
    body33: np.ndarray | None,
    left_hand: np.ndarray | None,
    right_hand: np.ndarray | None,
    face: np.ndarray | None,
    *,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """One frame of a PoseSequence as an OpenPose image.

    body33: (33, >=3) mediapipe body, x, y first and confidence last; hands: (21, 3); face:
    (468, 3) mesh, drawn as its 70 OpenPose points (a dot per mesh point is a white blob), or
    (N, 3) points drawn as given. Any may be None. background: (H, W, 3) uint8 to draw on (not
    modified), else black.
    """
    if face is not None and face.shape[0] == FACE_MESH_POINTS:
        face = face70_from_mesh(face)
    body18 = None if body33 is None else coco18_from_body(body33)
    return draw_openpose_frame(width, height, body18, left_hand, right_hand, face, background=background)


def draw_openpose_frame(
    width: int,
    height: int,
    body18: np.ndarray | None,
    left_hand: np.ndarray | None,
    right_hand: np.ndarray | None,
    face: np.ndarray | None,
    *,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Like draw_pose_frame, from OpenPose points: body18 (18, 3) COCO-18, hands (21, 3), face
    (N, 3) points (x, y, confidence); any may be None."""
    canvas = _canvas(width, height, background)
    if body18 is not None:
        canvas = _draw_body18(canvas, body18)
    for hand in (left_hand, right_hand):
        if hand is not None:
            _draw_hand(canvas, hand)
    if face is not None:
        radius = _line_width(width, height, 0.5)
        dots = np.round(face[face[:, 2] >= MIN_CONFIDENCE, :2]).astype(int).tolist()
        for x, y in dots:
            cv2.circle(canvas, (x, y), radius, FACE_COLOUR, -1, cv2.LINE_AA)
    return canvas


def draw_rig_frame(
    width: int, height: int, joints15: np.ndarray, *, background: np.ndarray | None = None
) -> np.ndarray:
    """(15, 3) rig joints (x, y, conf) drawn like draw_pose_frame's body (no eyes or ears)."""
    body18 = np.zeros((18, 3), dtype=np.float32)
    for k, j in enumerate(_COCO18_FROM_RIG):
        if j >= 0:
            body18[k] = joints15[j]
    return _draw_body18(_canvas(width, height, background), body18)


def _canvas(width: int, height: int, background: np.ndarray | None) -> np.ndarray:
    if background is None:
        return np.zeros((height, width, 3), dtype=np.uint8)
    if background.shape != (height, width, 3):
        raise ValueError(f"background must be ({height}, {width}, 3), got {background.shape}")
    return background.astype(np.uint8, copy=True)


def _line_width(width: int, height: int, factor: float = 1.0) -> int:
    return max(1, round(factor * 4 * min(width, height) / 512))


def _draw_body18(canvas: np.ndarray, body18: np.ndarray) -> np.ndarray:
    height, width = canvas.shape[:2]
    stick = _line_width(width, height)
    seen = body18[:, 2] >= MIN_CONFIDENCE
    xy = [tuple(p) for p in np.round(body18[:, :2]).astype(int).tolist()]
    limbs = canvas.copy()
    for k, (a, b) in enumerate(COCO18_LIMBS):
        if seen[a] and seen[b]:
            cv2.line(limbs, xy[a], xy[b], BODY_COLOURS[k], stick, cv2.LINE_AA)
    canvas = cv2.addWeighted(canvas, 0.4, limbs, 0.6, 0.0)
    for k in np.flatnonzero(seen):
        cv2.circle(canvas, xy[k], stick, BODY_COLOURS[k], -1, cv2.LINE_AA)
    return canvas


def _draw_hand(canvas: np.ndarray, hand: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    line = _line_width(width, height, 0.5)
    seen = hand[:, 2] >= MIN_CONFIDENCE
    xy = [tuple(p) for p in np.round(hand[:, :2]).astype(int).tolist()]
    for k, (a, b) in enumerate(HAND_BONES):
        if seen[a] and seen[b]:
            cv2.line(canvas, xy[a], xy[b], HAND_COLOURS[k], line, cv2.LINE_AA)
    for k in np.flatnonzero(seen):
        cv2.circle(canvas, xy[k], line, HAND_JOINT_COLOUR, -1, cv2.LINE_AA)
