"""What Wan-Animate is conditioned on, made from our own pose stage, in the conventions of its
official preprocessing (Wan-Video/Wan2.2, wan/modules/animate/preprocess/: human_visualization.py,
utils.py, process_pipepline.py; read at commit 42bf4cf):

- the pose video: 20 body points (OpenPose-18 + two toes), limbs as opaque ellipses in 0.6 of their
  colour, joints as full-colour dots, hands as rainbow lines with blue joints, no face points, on
  black; points under 0.5 confidence are not drawn. The body is the farm's retargeted skeleton;
  eyes, ears, toes and hands are carried over from the performer by the similarity transform of the
  bone they hang from (head, shin, forearm), so the character's proportions hold;
- the face video: the 68 face landmarks' box grown by sqrt(1.3) (three quarters of the height
  growth on top, for the forehead), cropped from the reference frame and stretched to the model's
  face size, as upstream; unlike upstream the box is smoothed over the window (no jitter);
- for replace mode, the person mask (mediapipe selfie segmentation, where upstream uses SAM2
  prompted with the subject's keypoints): the segmented regions that touch the subject's pose box,
  dilated by a 7x7 kernel three times, joined with that box and filled to their bounding box, and
  the background video: the reference frames with the masked region black;
- the reference image: padded to the render size with black, centred (upstream's padding_resize);
- sizes: about `area` pixels (upstream: 1280x720) at the canvas's aspect, floored to multiples of 16;
- prompts: upstream's defaults when the shot gives none (wan/configs: the animate config's prompt
  and the shared negative prompt), sent in Chinese as upstream sends them.
"""
from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

from farm.pose.extract import PoseSequence
from farm.pose.openpose import face70_from_mesh
from farm.pose.transfer import transfer_pose  # noqa: F401 - part of the inputs made here
from farm.rig import VISIBLE

# Limbs (0-based pairs of body points) and colours (RGB), as upstream draws them.
BODY_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
              (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (13, 18), (10, 19))
BODY_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
                (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
                (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85), (200, 200, 0), (100, 100, 0))
HAND_EDGES = tuple((0 if k % 4 == 0 else k, k + 1) for k in range(20))
HAND_JOINT_COLOUR = (0, 0, 255)
MIN_SCORE = 0.5
FACE_BOX_GROWTH = np.sqrt(1.3)
FACE_BOX_SMOOTHING = 9  # frames of the centred moving average on the face box
MASK_KERNEL, MASK_ITERATIONS = 7, 3
# The subject's pose box (its landmarks' box) grown by this fraction of its height on every side:
# landmarks are joint centres, the body reaches past them (the top of the head, hands, feet).
POSE_BOX_GROWTH = 0.1
# "People in the video are doing actions." (wan/configs/wan_animate_14B.py, animate_14B.prompt)
DEFAULT_PROMPT = "视频中的人在做动作"
# wan/configs/shared_config.py, sample_neg_prompt: garish colours, overexposed, static, blurred
# details, subtitles, ... extra fingers, badly drawn hands and faces, ... three legs, a crowd in
# the background, walking backwards.
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
    "杂乱的背景，三条腿，背景人很多，倒着走"
)


def render_size(width: int, height: int, area: int, multiple: int = 16) -> tuple[int, int]:
    """(w, h) at the aspect width / height with w * h about `area`, each floored to a multiple of
    `multiple` (upstream's resize_by_area: 1920x1080 -> 1280x720, 640x480 -> 1104x816)."""
    aspect = width / height
    h = np.sqrt(area / aspect)
    w = area / h
    return max(multiple, int(w // multiple) * multiple), max(multiple, int(h // multiple) * multiple)


def draw_pose(width: int, height: int, body: np.ndarray, hands: np.ndarray) -> np.ndarray:
    """One pose frame, (height, width, 3) uint8 RGB on black, drawn as upstream draws it, to the
    pixel: the same float arithmetic (in float64), the same truncations to int.
    body: (20, 3) x, y, score; hands: (2, 21, 3) left then right hand, drawn in that order."""
    body, hands = np.asarray(body, np.float64), np.asarray(hands, np.float64)
    canvas = np.zeros((height, width, 3), np.uint8)
    stick = max(int(min(height, width) / 200) - 1, 1)
    seen = body[:, 2] >= MIN_SCORE
    for k, (a, b) in enumerate(BODY_LIMBS):
        if seen[a] and seen[b]:
            (x1, y1), (x2, y2) = body[a, :2], body[b, :2]
            length = ((y1 - y2) ** 2 + (x1 - x2) ** 2) ** 0.5
            # Upstream's angle points from the second point to the first; the ellipse is the same
            # either way, but int() truncates the two angles (180 degrees apart) differently.
            angle = math.degrees(math.atan2(y1 - y2, x1 - x2))
            centre = (int((x1 + x2) / 2), int((y1 + y2) / 2))
            polygon = cv2.ellipse2Poly(centre, (int(length / 2), stick), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [int(c * 0.6) for c in BODY_COLOURS[k]])
    for k in np.flatnonzero(seen):
        cv2.circle(canvas, (int(body[k, 0]), int(body[k, 1])), stick, BODY_COLOURS[k], -1)
    hand_width = max(stick // 2, 1)
    for hand in hands:
        scored = hand[:, 2] >= MIN_SCORE
        # Points at the image's edge are "not found" (upstream tests the truncated pixel against 0.01).
        placed = (hand[:, :2].astype(np.int64) > 0).all(axis=1)
        for k, (a, b) in enumerate(HAND_EDGES):
            if scored[a] and scored[b] and placed[a] and placed[b]:
                # Float colours, as upstream passes them: OpenCV rounds each channel to the nearest level.
                colour = tuple(255.0 * c for c in colorsys.hsv_to_rgb(k / len(HAND_EDGES), 1.0, 1.0))
                cv2.line(canvas, (int(hand[a, 0]), int(hand[a, 1])), (int(hand[b, 0]), int(hand[b, 1])), colour, hand_width)
        for x, y, _ in hand[scored & placed]:
            cv2.circle(canvas, (int(x), int(y)), hand_width, HAND_JOINT_COLOUR, -1)
    return canvas


def pad_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: `image` scaled to fit, centred on black (upstream's
    padding_resize, which prepares the reference image for both the VAE and CLIP)."""
    h, w = image.shape[:2]
    out = np.zeros((height, width, 3), np.uint8)
    if h / w > height / width:
        fitted = int(height / h * w)
        x = int((width - fitted) / 2)
        out[:, x : x + fitted] = cv2.resize(image, (fitted, height), interpolation=cv2.INTER_LINEAR)
    else:
        fitted = int(width / w * h)
        y = int((height - fitted) / 2)
        out[y : y + fitted] = cv2.resize(image, (width, fitted), interpolation=cv2.INTER_LINEAR)
    return out


def face_boxes(driving: PoseSequence, frame_size: tuple[int, int]) -> np.ndarray:
    """(n, 4) face boxes x1, y1, x2, y2 in the pixels of frames of `frame_size` (the source's, or
    the reference frames shrunk to the render area): upstream's box on the 68 face landmarks
    (grown by sqrt(1.3), the height growth three quarters above the landmarks), filled in over
    frames without a face and smoothed by a centred moving average, so the crop does not jitter.
    Without any face in the window, a box around the head from the body landmarks, or the top
    middle of the frame."""
    n = len(driving)
    boxes = np.full((n, 4), np.nan)
    face68 = face70_from_mesh(driving.face)[:, :68]
    for t in range(n):
        if face68[t, :, 2].min() > 0:
            lo, hi = face68[t, :, :2].min(axis=0), face68[t, :, :2].max(axis=0)
        else:
            head = driving.body[t, :11]  # nose, eyes, ears, mouth
            seen = head[:, 3] >= VISIBLE
            if seen.sum() < 3:
                continue
            lo, hi = head[seen, :2].min(axis=0), head[seen, :2].max(axis=0)
            pad = max((hi - lo).max() * 0.4, 4.0)
            lo, hi = lo - pad, hi + pad
        (w, h) = hi - lo
        dw, dh = w * (FACE_BOX_GROWTH - 1) / 2, h * (FACE_BOX_GROWTH - 1) / 4
        boxes[t] = lo[0] - dw, lo[1] - 3 * dh, hi[0] + dw, hi[1] + dh
    width, height = frame_size
    boxes *= np.tile([width / driving.width, height / driving.height], 2)
    known = ~np.isnan(boxes[:, 0])
    if not known.any():
        boxes[:] = (width / 4, 0, 3 * width / 4, height / 2)
    else:
        idx = np.arange(n)
        boxes = np.stack([np.interp(idx, idx[known], boxes[known, c]) for c in range(4)], axis=1)
    k = min(FACE_BOX_SMOOTHING, n)
    pad = k // 2
    kernel = np.ones(k) / k
    boxes = np.stack([np.convolve(np.pad(boxes[:, c], (pad, k - 1 - pad), mode="edge"), kernel, mode="valid")
                      for c in range(4)], axis=1)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes.astype(np.float32)


def face_crops(frames: np.ndarray, boxes: np.ndarray, size: int) -> list[np.ndarray]:
    """(size, size, 3) crops of `frames` on `boxes` (see face_boxes), stretched to the square."""
    crops = []
    for frame, (x1, y1, x2, y2) in zip(frames, boxes):
        sx, sy = size / max(x2 - x1, 1.0), size / max(y2 - y1, 1.0)
        matrix = np.float32([[sx, 0, -x1 * sx], [0, sy, -y1 * sy]])
        crops.append(cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return crops


def person_masks(frames: np.ndarray, driving: PoseSequence) -> np.ndarray:
    """(n, h, w) bool: where the new character goes in each frame. The performer: what mediapipe's
    selfie segmentation finds that touches the subject's pose box (other people stay in the
    background), dilated (7x7, three times) as upstream does, joined with that box (where the
    segmentation misses the performer) and filled to its bounding box, as upstream does. Frames
    where neither finds anything take the mask of the nearest frame that has one, so the
    character does not vanish there. driving: the performer's pose on the frames (source pixels)."""
    import mediapipe as mp

    n, h, w, _ = frames.shape
    boxes = subject_boxes(driving, (w, h))
    kernel = np.ones((MASK_KERNEL, MASK_KERNEL), np.uint8)
    masks = np.zeros((n, h, w), bool)
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        for t, frame in enumerate(frames):
            found = _touching(seg.process(np.ascontiguousarray(frame)).segmentation_mask > 0.5, boxes[t])
            region = cv2.dilate(found.astype(np.uint8), kernel, iterations=MASK_ITERATIONS) > 0
            if not np.isnan(boxes[t, 0]):
                x1, y1, x2, y2 = np.rint(boxes[t]).astype(int)
                region[y1:y2, x1:x2] = True
            ys, xs = np.nonzero(region)
            if len(xs):
                masks[t, ys.min() : ys.max(), xs.min() : xs.max()] = True
    return _fill_missing(masks)


def subject_boxes(driving: PoseSequence, frame_size: tuple[int, int]) -> np.ndarray:
    """(n, 4) x1, y1, x2, y2: the box of the subject's seen landmarks (body and hands) on each
    frame, grown by POSE_BOX_GROWTH of its height, in the pixels of frames of `frame_size`,
    clipped to them; NaN on frames without the subject."""
    width, height = frame_size
    scale = np.array([width / driving.width, height / driving.height])
    boxes = np.full((len(driving), 4), np.nan)
    for t in range(len(driving)):
        body = driving.body[t][driving.body[t, :, 3] >= VISIBLE, :2]
        hands = [hand[hand[:, 2] > 0, :2] for hand in (driving.left_hand[t], driving.right_hand[t])]
        points = np.concatenate([body, *hands]) * scale
        if len(points) < 2:
            continue
        lo, hi = points.min(axis=0), points.max(axis=0)
        grow = (hi[1] - lo[1]) * POSE_BOX_GROWTH
        boxes[t] = np.clip([lo[0] - grow, lo[1] - grow, hi[0] + grow, hi[1] + grow], 0, [width, height, width, height])
    return boxes


def _touching(found: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The connected regions of the (h, w) bool mask `found` that reach into `box` (x1, y1, x2, y2);
    all of `found` when the box is unknown (NaN)."""
    if np.isnan(box[0]) or not found.any():
        return found
    count, labels = cv2.connectedComponents(found.astype(np.uint8))
    x1, y1, x2, y2 = np.rint(box).astype(int)
    inside = np.unique(labels[y1:y2, x1:x2])
    return np.isin(labels, inside[inside > 0])


def _fill_missing(masks: np.ndarray) -> np.ndarray:
    """Each empty (h, w) mask of (n, h, w) replaced by the nearest non-empty one (the earlier on a tie)."""
    have = np.flatnonzero(masks.any(axis=(1, 2)))
    if len(have) in (0, len(masks)):
        return masks
    for t in np.flatnonzero(~masks.any(axis=(1, 2))):
        masks[t] = masks[have[np.argmin(np.abs(have - t))]]
    return masks
