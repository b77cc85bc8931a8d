"""PoseSequence -> OpenPose JSON (format version 1.3), for tools that read OpenPose keypoints.

Body: COCO-18 layout (nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/wrist, right
hip/knee/ankle, left hip/knee/ankle, right eye, left eye, right ear, left ear), the layout
ControlNet-style pose conditioning and DWPose use. Neck is the shoulders' midpoint.
Hands: mediapipe's 21 hand landmarks are in OpenPose's hand order already.
Face: OpenPose's 70 points (the 68-point iBUG layout + right and left pupil) picked from the
468-point mesh; the mesh has no iris without refinement, so each pupil is the mean of four points
around that eye.
Coordinates are pixels, as in PoseSequence; a point not found is (0, 0, 0) as in OpenPose.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from farm.pose.extract import PoseSequence

# mediapipe body landmark(s) for each COCO-18 point; two indices mean their midpoint.
COCO18_FROM_MEDIAPIPE: tuple[tuple[int, ...], ...] = (
    (0,), (11, 12), (12,), (14,), (16,), (11,), (13,), (15,),
    (24,), (26,), (28,), (23,), (25,), (27,), (5,), (2,), (8,), (7,),
)

# Face-mesh index for each of the 68 iBUG points, in iBUG order.
_FACE68 = (
    # jaw, from the right temple (image left) round the chin to the left temple
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    # right brow outer -> inner, left brow inner -> outer
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge top -> tip, then nostrils right -> left
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    # right eye: outer corner, upper lid x2, inner corner, lower lid x2
    33, 160, 158, 133, 153, 144,
    # left eye: inner corner, upper lid x2, outer corner, lower lid x2
    362, 385, 387, 263, 373, 380,
    # outer lips from the right corner along the upper lip, back along the lower lip
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # inner lips the same way
    78, 81, 13, 311, 308, 402, 14, 178,
)
_PUPILS = ((33, 133, 159, 145), (362, 263, 386, 374))  # right eye, left eye


def coco18_from_body(body33: np.ndarray) -> np.ndarray:
    """(..., 33, C) mediapipe body (x, y first, confidence last) -> (..., 18, 3) COCO-18 x, y, conf.
    A midpoint takes the lower confidence of its two landmarks."""
    out = np.empty(body33.shape[:-2] + (18, 3), dtype=np.float32)
    for k, idx in enumerate(COCO18_FROM_MEDIAPIPE):
        out[..., k, :2] = body33[..., list(idx), :2].mean(axis=-2)
        out[..., k, 2] = body33[..., list(idx), -1].min(axis=-1)
    return out


def face70_from_mesh(face468: np.ndarray) -> np.ndarray:
    """(..., 468, 3) face mesh -> (..., 70, 3) OpenPose face points (x, y, conf)."""
    pupils = [face468[..., list(idx), :].mean(axis=-2, keepdims=True) for idx in _PUPILS]
    return np.concatenate([face468[..., list(_FACE68), :], *pupils], axis=-2)


def to_openpose_frames(seq: PoseSequence) -> list[dict]:
    """One OpenPose JSON document per frame; "people" is empty on frames without a person."""
    body = _zero_unseen(coco18_from_body(seq.body))
    left, right = _zero_unseen(seq.left_hand), _zero_unseen(seq.right_hand)
    face = _zero_unseen(face70_from_mesh(seq.face))
    frames = []
    for t, found in enumerate(seq.person_found()):
        person = {
            "person_id": [-1],
            "pose_keypoints_2d": _flat(body[t]),
            "face_keypoints_2d": _flat(face[t]),
            "hand_left_keypoints_2d": _flat(left[t]),
            "hand_right_keypoints_2d": _flat(right[t]),
            "pose_keypoints_3d": [], "face_keypoints_3d": [],
            "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": [],
        }
        frames.append({"version": 1.3, "people": [person] if found else [],
                       "canvas_width": seq.width, "canvas_height": seq.height})
    return frames


def write_openpose_json(seq: PoseSequence, folder: str | Path) -> list[Path]:
    """Write `<frame:06d>_keypoints.json` per frame into folder (created if needed), numbered by
    the frame's index in the source video (seq.start + t). Returns the paths in frame order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, document in enumerate(to_openpose_frames(seq)):
        path = folder / f"{seq.start + t:06d}_keypoints.json"
        path.write_text(json.dumps(document))
        paths.append(path)
    return paths


def _zero_unseen(points: np.ndarray) -> np.ndarray:
    """OpenPose writes (0, 0, 0) for a point it did not detect."""
    return np.where(points[..., 2:3] > 0.0, points, 0.0)


def _flat(points: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in points.reshape(-1)]
