"""Quality metrics of a rendered shot (DESIGN §7): plain functions of arrays, no I/O.

Pose points are COCO-17 (x, y, visibility) in output pixels; a point counts where its visibility
is at least `farm.rig.VISIBLE`. Sources of the formulas: research/puppet_backend_and_metrics.md §5.

- PCK@α: share of the target's visible points whose measured point lies within α·s, with s the
  target's torso size (neck to hip midpoint, or 1.5 shoulder widths where the hips are out of
  view) on that frame. A point not found counts as a miss. Per point over the frames (point_pck),
  the worst point shows one limb drawn astray.
- OKS: COCO's object keypoint similarity (pycocotools `computeOks`), exp(-d² / (2·area·k²)) with
  k = 2σ per point, averaged over the target's visible points; `area` is the target points' box.
- jitter: mean keypoint acceleration |x[t-1] - 2x[t] + x[t+1]| over points seen on all three
  frames, divided by the torso size (no reference needed).
- histogram distance: Bhattacharyya distance of HSV histograms (0 identical, 1 disjoint).
- SSIM: OpenCV's (Wang et al. 2004, Gaussian 11x11, σ 1.5) on grey crops.
- seam score: at a window join, how much the picture would change cutting from one window to the
  next over how much it changes inside the next window, in their overlap (1.0: the windows agree,
  the join cannot be seen).
"""
from __future__ import annotations

import cv2
import numpy as np

from farm.rig import VISIBLE

COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# COCO's per-point σ (pycocotools kpt_oks_sigmas), in COCO17 order.
COCO_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
                        1.07, 1.07, 0.87, 0.87, 0.89, 0.89]) / 10.0
# COCO-17 from the OpenPose/COCO-18 layout of farm.pose.openpose (which adds a neck, right first).
COCO17_FROM_COCO18 = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
_SHOULDERS, _HIPS = (5, 6), (11, 12)
# Torso length over shoulder width (landmark to landmark), for shots without the hips: mediapipe
# measures about 1.3 on the TV host, 1.6 on the ASL signer and 2.1 on the dancer of shared/data.
TORSO_PER_SHOULDER_WIDTH = 1.5
SEAM_FLOOR = 1.0  # grey levels: a frame-to-frame change smaller than this is not seen


def torso_size(points: np.ndarray) -> np.ndarray:
    """(T, 17, 3) -> (T,) distance from the shoulders' midpoint to the hips' midpoint; where the
    hips are unseen (a chest-up or close-up shot), TORSO_PER_SHOULDER_WIDTH shoulder widths; nan
    where the shoulders are unseen too."""
    shoulders = points[:, _SHOULDERS, 2].min(axis=1) >= VISIBLE
    hips = points[:, _HIPS, 2].min(axis=1) >= VISIBLE
    neck = points[:, _SHOULDERS, :2].mean(axis=1)
    torso = np.linalg.norm(neck - points[:, _HIPS, :2].mean(axis=1), axis=-1)
    width = TORSO_PER_SHOULDER_WIDTH * np.linalg.norm(points[:, _SHOULDERS[0], :2] - points[:, _SHOULDERS[1], :2], axis=-1)
    size = np.where(hips, torso, width)
    return np.where(shoulders & (size > 1e-3), size, np.nan)


def pck(measured: np.ndarray, target: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """(T,) PCK@alpha per frame (nan on frames where the target has no visible point or no torso).
    measured, target: (T, 17, 3)."""
    size = torso_size(target)
    wanted = target[..., 2] >= VISIBLE
    found = measured[..., 2] >= VISIBLE
    dist = np.linalg.norm(measured[..., :2] - target[..., :2], axis=-1)
    hit = found & wanted & (dist <= alpha * size[:, None])
    count = wanted.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = hit.sum(axis=1) / count
    return np.where((count > 0) & np.isfinite(size), out, np.nan)


def point_pck(measured: np.ndarray, target: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """(17,) PCK@alpha of each point over the frames: the share of the frames where the target
    shows it (and has a torso) on which it is measured within alpha torso sizes (nan for a point
    never shown). measured, target: (T, 17, 3)."""
    size = torso_size(target)
    wanted = (target[..., 2] >= VISIBLE) & np.isfinite(size)[:, None]
    found = measured[..., 2] >= VISIBLE
    dist = np.linalg.norm(measured[..., :2] - target[..., :2], axis=-1)
    hit = found & wanted & (dist <= alpha * np.nan_to_num(size)[:, None])
    count = wanted.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hit.sum(axis=0) / count, np.nan)


def oks(measured: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(T,) COCO OKS per frame (nan where the target has no visible point). A point the detector
    missed scores 0."""
    wanted = target[..., 2] >= VISIBLE
    found = measured[..., 2] >= VISIBLE
    out = np.full(len(target), np.nan)
    k2 = (2 * COCO_SIGMAS) ** 2
    for t in np.flatnonzero(wanted.any(axis=1)):
        pts = target[t, wanted[t], :2]
        area = max(float(np.prod(pts.max(axis=0) - pts.min(axis=0))), 1.0)
        d2 = ((measured[t, :, :2] - target[t, :, :2]) ** 2).sum(axis=-1)
        score = np.where(found[t], np.exp(-d2 / (2 * area * k2)), 0.0)
        out[t] = score[wanted[t]].mean()
    return out


def acceleration(points: np.ndarray) -> np.ndarray:
    """(T,) mean keypoint acceleration on each frame divided by the torso size (nan at the ends
    and where no point is seen on the frame and both neighbours)."""
    out = np.full(len(points), np.nan)
    if len(points) < 3:
        return out
    seen = points[..., 2] >= VISIBLE
    both = seen[:-2] & seen[1:-1] & seen[2:]
    accel = np.linalg.norm(points[:-2, :, :2] - 2 * points[1:-1, :, :2] + points[2:, :, :2], axis=-1)
    size = torso_size(points)[1:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(both, accel, 0.0).sum(axis=1) / both.sum(axis=1)
        out[1:-1] = mean / size
    return out


def hsv_histogram(rgb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Hue-saturation histogram (30 x 32 bins, L1-normalised) of the masked pixels."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    m = None if mask is None else mask.astype(np.uint8) * 255
    hist = cv2.calcHist([hsv], [0, 1], m, [30, 32], [0, 180, 0, 256])
    return cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance of two histograms from hsv_histogram (0 identical, 1 disjoint)."""
    if a.sum() <= 0 or b.sum() <= 0:
        return 1.0
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two same-size grey (or RGB, converted) images."""
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    if b.ndim == 3:
        b = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    score, _ = cv2.quality.QualitySSIM_compute(a, b)
    return float(score[0])


def join_seam(tail: np.ndarray, frames: np.ndarray) -> float:
    """Seam score of one window join, from the two windows' own frames where they overlap.

    tail: (n, h, w, 3) the earlier window's frames over the overlap; frames: (>= n, h, w, 3) the
    later window's, from the same first frame (as the stitch blends them, after colour fitting;
    in colour, so that a colour cast counts).
    Cutting from the earlier window to the later one at any point t of the overlap changes the
    picture by |tail[t] - frames[t+1]|, where staying in the later window changes it by
    |frames[t] - frames[t+1]|. The score is the mean of the first over the mean of the second,
    each plus SEAM_FLOOR grey levels (changes below that are not seen): 1.0 when the windows agree
    (exactly, for identical windows), growing with their disagreement against the motion.
    """
    steps = min(len(tail), len(frames) - 1)
    if steps < 1:
        return 1.0
    cut = np.mean([frame_difference(tail[t], frames[t + 1]) for t in range(steps)])
    stay = np.mean([frame_difference(frames[t], frames[t + 1]) for t in range(steps)])
    return float((cut + SEAM_FLOOR) / (stay + SEAM_FLOOR))


def small(frame: np.ndarray, width: int = 160, *, grey: bool = False) -> np.ndarray:
    """A frame at `width` pixels wide (in grey with grey=True), for cheap frame differences."""
    h, w = frame.shape[:2]
    if grey and frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(frame, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two frames, in levels (0-255)."""
    return float(cv2.absdiff(a, b).mean())


def nanmean(values) -> float | None:
    """Mean of the finite values, None when there is none (for manifests: no NaN in JSON)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if len(arr) else None
