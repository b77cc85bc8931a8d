"""Measuring a shot's output (DESIGN §7).

Two halves:
- `FrameMeter` looks at the output frames as a segment is encoded (on whichever worker encodes it,
  so a long shot is measured in parallel): the performer's pose, re-detected by mediapipe or, for a
  character mediapipe cannot see, tracked by the character's own texture (farm.qa.track); the
  character region's colour histogram and the aligned torso's SSIM against the character image,
  and the difference to the frame before.
- `shot_quality` puts the segments' measurements together with the target skeleton into the
  shot's metrics (farm.qa.metrics), per frame, per window and for the shot, and `verdict` checks
  them against the `qa.*` thresholds.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass

import cv2
import numpy as np

from farm.pose.extract import PoseSequence, image_pose_detector, view_image
from farm.pose.openpose import coco18_from_body
from farm.pose.transfer import transfer_pose
from farm.qa import metrics as m
from farm.qa.track import Texture, track_joints
from farm.rig import BONES, JOINT_INDEX, VISIBLE
from farm.types import Character
from farm.windows import Window

SMALL_WIDTH = 160  # frame differences are measured at this width
SSIM_SIDE = 96  # torso crops are compared at most this large
_TORSO = tuple(JOINT_INDEX[n] for n in ("neck", "right_shoulder", "left_shoulder", "pelvis", "right_hip", "left_hip"))
# COCO-17 points the rig itself has (eyes and ears come from the performer), and their rig joints.
_COCO17_FROM_RIG = {0: JOINT_INDEX["head"], 5: JOINT_INDEX["left_shoulder"], 6: JOINT_INDEX["right_shoulder"],
                    7: JOINT_INDEX["left_elbow"], 8: JOINT_INDEX["right_elbow"], 9: JOINT_INDEX["left_wrist"],
                    10: JOINT_INDEX["right_wrist"], 11: JOINT_INDEX["left_hip"], 12: JOINT_INDEX["right_hip"],
                    13: JOINT_INDEX["left_knee"], 14: JOINT_INDEX["right_knee"], 15: JOINT_INDEX["left_ankle"],
                    16: JOINT_INDEX["right_ankle"]}


@dataclass(frozen=True)
class Appearance:
    """What output frames are compared with: the HSV histogram of the character's body region in its
    image, and the grey crop of its torso (box x0, y0, x1, y1) with the rest pose's torso joints."""

    hist: np.ndarray
    torso: np.ndarray
    box: tuple[int, int, int, int]
    rest: np.ndarray

    @classmethod
    def of(cls, character: Character) -> Appearance:
        image, joints = character.image, character.joints
        region = body_band(joints, image.shape[:2]) & character.mask
        rest = joints[list(_TORSO), :2].astype(np.float32)
        pad = 0.15 * _torso_length(joints)
        x0, y0 = np.floor(rest.min(axis=0) - pad).astype(int)
        x1, y1 = np.ceil(rest.max(axis=0) + pad).astype(int)
        h, w = image.shape[:2]
        box = (max(0, x0), max(0, y0), min(w, x1), min(h, y1))
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[box[1] : box[3], box[0] : box[2]]
        return cls(m.hsv_histogram(image, region), _fit(grey), box, rest)


def body_band(joints: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: a band along the rig's bones, as wide as a limb, where the character's body
    should be. joints: (15, >=2) pixels."""
    band = np.zeros(shape, np.uint8)
    width = max(3, int(round(0.3 * _torso_length(joints))))
    for parent, child in BONES:
        a, b = joints[parent, :2], joints[child, :2]
        cv2.line(band, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1, width)
    return band.astype(bool)


class FrameMeter:
    """Per-frame measurements of consecutive output frames. Use as a context manager (it holds a
    mediapipe graph); `add` each frame in order, then `result()`.

    targets: (n, 15, 3) the rig joints the frames should show, on the canvas. detect_pose: run
    mediapipe on each frame (about 12 ms a frame here, nearly all of the meter's time). texture:
    for a character mediapipe cannot see (detector_sees), its parts are tracked in each frame
    instead (farm.qa.track, 6-8 ms a frame at 512 px); pose visibility is then nan for a point not
    measured (see track_joints)."""

    def __init__(self, appearance: Appearance, targets: np.ndarray, *, detect_pose: bool = True,
                 texture: Texture | None = None) -> None:
        self.appearance, self.targets, self.detect_pose, self.texture = appearance, targets, detect_pose, texture
        self.seconds = 0.0
        self.pose, self.hist, self.ssim, self.diff = [], [], [], []
        self._previous: np.ndarray | None = None
        self._first: np.ndarray | None = None
        self._stack = ExitStack()
        self._near = None  # a second detector for views around the target (_detect_near)

    def __enter__(self) -> FrameMeter:
        if self.detect_pose:
            self._detect = self._stack.enter_context(image_pose_detector(tracking=True))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def add(self, frame: np.ndarray) -> None:
        started = time.perf_counter()
        t = len(self.pose)
        target = self.targets[t]
        if self.texture is not None:
            self.pose.append(coco17_from_tracked(track_joints(self.texture, frame, target)))
        else:
            body = self._detect(frame) if self.detect_pose else None
            if body is not None and _someone_else(body, target):
                body = self._detect_near(frame, target)
            self.pose.append(np.zeros((17, 3), np.float32) if body is None else coco17_from_body(body))
        region = body_band(target, frame.shape[:2])
        self.hist.append(m.histogram_distance(m.hsv_histogram(frame, region), self.appearance.hist))
        self.ssim.append(self._torso_ssim(frame, target))
        small = m.small(frame, SMALL_WIDTH, grey=True)
        self.diff.append(np.nan if self._previous is None else m.frame_difference(self._previous, small))
        if self._first is None:
            self._first = small
        self._previous = small
        self.seconds += time.perf_counter() - started

    def _detect_near(self, frame: np.ndarray, target: np.ndarray) -> np.ndarray | None:
        """The person in a view of the frame around where the target puts the character: with
        other people in the picture (a character image of two, a crowd behind), mediapipe finds
        the most prominent one, not necessarily the one the backend animated."""
        if self._near is None:
            self._near = self._stack.enter_context(image_pose_detector())
        shown = target[target[:, 2] > 0, :2] if (target[:, 2] > 0).any() else target[:, :2]
        margin = _torso_length(target)
        x0, y0 = np.floor(shown.min(axis=0) - margin).astype(int)
        x1, y1 = np.ceil(shown.max(axis=0) + margin).astype(int)
        box = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
        body = self._near(view_image(frame, box))
        if body is not None:
            body[:, 0] += box[0]
            body[:, 1] += box[1]
        return body

    def result(self) -> dict[str, np.ndarray]:
        """pose (n, 17, 3) re-detected COCO-17; hist, ssim, diff (n,) with diff[0] nan (the frame
        before is another segment's); first, last: the first and last frames, small and grey."""
        return {
            "pose": np.array(self.pose, np.float32).reshape(-1, 17, 3),
            "hist": np.array(self.hist), "ssim": np.array(self.ssim), "diff": np.array(self.diff),
            "first": self._first, "last": self._previous,
        }

    def _torso_ssim(self, frame: np.ndarray, target: np.ndarray) -> float:
        """SSIM of the torso, the output warped onto the character image by the similarity that
        maps the target's torso joints onto the rest pose's."""
        a = self.appearance
        if target[list(_TORSO), 2].min() <= 0:
            return np.nan
        matrix, _ = cv2.estimateAffinePartial2D(target[list(_TORSO), :2].astype(np.float32), a.rest, method=cv2.LMEDS)
        if matrix is None:
            return np.nan
        matrix[:, 2] -= a.box[:2]
        size = (a.box[2] - a.box[0], a.box[3] - a.box[1])
        warped = cv2.warpAffine(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), matrix, size, flags=cv2.INTER_AREA)
        return m.ssim(_fit(warped), a.torso)


def coco17_from_body(body33: np.ndarray) -> np.ndarray:
    """mediapipe's 33 body landmarks -> COCO-17 (x, y, visibility)."""
    return coco18_from_body(body33)[..., list(m.COCO17_FROM_COCO18), :]


def coco17_from_tracked(tracked: np.ndarray) -> np.ndarray:
    """track_joints' (15, 3) -> (17, 3): visibility 1 where found, 0 where not found, nan where not
    measured (and for eyes and ears, which the rig has not)."""
    out = np.full((17, 3), np.nan, np.float32)
    for k, j in _COCO17_FROM_RIG.items():
        score = tracked[j, 2]
        out[k] = (tracked[j, 0], tracked[j, 1], np.nan if np.isnan(score) else float(score > 0))
    return out


def coco17_target(targets: np.ndarray, driving: PoseSequence) -> np.ndarray:
    """(T, 17, 3) the pose the output should show: the retargeted rig, with eyes and ears carried
    over from the performer (as the Wan backend draws them)."""
    body20, _ = transfer_pose(targets, driving)
    return body20[:, list(m.COCO17_FROM_COCO18)]


def coco17_from_rig(joints: np.ndarray) -> np.ndarray:
    """(T, 15, >=2) rig joints (e.g. where a backend drew them) -> (T, 17, 3); no eyes or ears."""
    out = np.zeros((len(joints), 17, 3), np.float32)
    for k, j in _COCO17_FROM_RIG.items():
        out[:, k, :2] = joints[:, j, :2]
        out[:, k, 2] = 1.0
    return out


@dataclass
class Quality:
    """A shot's measured quality: `summary` (manifest metrics), `windows` (one entry per window),
    `frames` (per-frame columns for qa.parquet and the report's plots)."""

    summary: dict
    windows: list[dict]
    frames: dict[str, np.ndarray]


def detector_sees(character: Character) -> bool:
    """Whether mediapipe finds the character's own pose in its image (PCK@0.1 of at least 0.5
    against the skeleton the farm uses). It is trained on people: drawings and cartoons are often
    missed or, worse, found with a made-up pose, and re-detection on their renders means nothing."""
    if character.source == "detected":
        return True
    from farm.pose.extract import detect_image_pose

    body = detect_image_pose(character.image)
    if body is None:
        return False
    rest = coco17_from_rig(character.joints[None])
    return bool(np.nan_to_num(m.pck(coco17_from_body(body)[None], rest))[0] >= 0.5)


def in_frame(target: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """The target (T, 17, 3) with the points it puts outside a frame of frame_size (width, height)
    not wanted (confidence 0): no backend can show them there and no detector find them, as the hand
    of a half-length character that the motion lowers below the frame's edge."""
    width, height = frame_size
    x, y = target[..., 0], target[..., 1]
    outside = (x < 0) | (y < 0) | (x >= width) | (y >= height)
    if not outside.any():
        return target
    target = target.copy()
    target[outside, 2] = 0.0
    return target


def shot_quality(
    parts: list[dict[str, np.ndarray]], windows: list[Window], target: np.ndarray, *,
    detector_sees_character: bool = True, frame_size: tuple[int, int] | None = None,
) -> Quality:
    """parts: FrameMeter results of consecutive segments covering the shot; target: (T, 17, 3)
    from coco17_target; frame_size: (width, height) of the frames, whose target points outside
    them are not judged (None: every point is).

    The output's pose (pose_source) is mediapipe's re-detection ("mediapipe"), or for a character
    mediapipe cannot see in its own image (detector_sees) its parts tracked by their texture
    ("texture-tracked", farm.qa.track): on the rig's 13 COCO points, each counted on the frames
    where it is measured (not where its part cannot be placed on the character, nor where the
    target puts it off the frame or folds its limb onto it). joint_pck is the worst point's PCK over the shot
    (joint_pck_worst names it): one limb drawn astray shows there when the shot's PCK hides it."""
    detected = np.concatenate([p["pose"] for p in parts])
    hist = np.concatenate([p["hist"] for p in parts])
    ssim = np.concatenate([p["ssim"] for p in parts])
    diff = np.concatenate([p["diff"] for p in parts])
    starts = np.cumsum([0] + [len(p["pose"]) for p in parts])
    for k in range(1, len(parts)):  # the transition between two segments
        diff[starts[k]] = m.frame_difference(parts[k - 1]["last"], parts[k]["first"])
    total = len(target)
    if len(detected) != total:
        raise RuntimeError(f"measured {len(detected)} frames of a {total}-frame shot")

    if frame_size is not None:
        target = in_frame(target, frame_size)
    found = (detected[..., 2] >= VISIBLE).any(axis=1)
    source, measured = "mediapipe", detected
    if not detector_sees_character:
        source = "texture-tracked"
        unmeasured = np.isnan(detected[..., 2])  # the rig has no eyes or ears, and see track_joints
        measured = np.where(unmeasured[..., None], 0.0, detected).astype(np.float32)
        target = target.copy()
        target[unmeasured, 2] = 0.0
    pck, oks = m.pck(measured, target), m.oks(measured, target)
    points = m.point_pck(measured, target)
    accel, accel_target = m.acceleration(measured), m.acceleration(target)
    joins = [(b.start, a.end) for a, b in zip(windows, windows[1:]) if b.start < a.end]
    seams = {int(w): float(score) for p in parts for w, score in p.get("seams", np.zeros((0, 2)))}
    owner = np.zeros(total, np.int64)
    for w in windows:
        owner[w.start :] = w.index

    per_window = []
    for w in windows:
        own = owner == w.index
        per_window.append({
            "index": w.index, "start": w.start, "end": w.end,
            "pose_pck": _round(m.nanmean(pck[own])), "pose_oks": _round(m.nanmean(oks[own])),
            "jitter": _round(m.nanmean(accel[own])),
            "appearance_drift": _round(m.nanmean(hist[own])), "appearance_ssim": _round(m.nanmean(ssim[own])),
            "seam_score": _round(seams.get(w.index)),
        })
    drifts = [w["appearance_drift"] for w in per_window if w["appearance_drift"] is not None]
    ssims = [w["appearance_ssim"] for w in per_window if w["appearance_ssim"] is not None]
    summary = {
        "pose_source": source,
        "pose_detected": _round(float(found.mean())) if detector_sees_character else None,
        "pose_pck": _round(m.nanmean(pck)),
        "pose_oks": _round(m.nanmean(oks)),
        "joint_pck": _round(np.nanmin(points)) if np.isfinite(points).any() else None,
        "joint_pck_worst": m.COCO17[int(np.nanargmin(points))] if np.isfinite(points).any() else None,
        "jitter": _round(m.nanmean(accel)),
        "jitter_target": _round(m.nanmean(accel_target)),
        "appearance_drift": max(drifts) if drifts else None,
        "appearance_ssim": min(ssims) if ssims else None,
        "seam_score": _round(max(seams.values())) if seams else 1.0,
    }
    at_join = np.zeros(total, bool)
    for first, end in joins:
        at_join[first : end + 1] = True
    frames = {
        "frame": np.arange(total), "window": owner, "pose_pck": pck, "pose_oks": oks, "jitter": accel,
        "appearance_drift": hist, "appearance_ssim": ssim, "frame_diff": diff, "at_join": at_join[:total],
        "measured": measured, "target": target,
    }
    return Quality(summary, per_window, frames)


# The thresholds of conf/qa (key in QAConfig, metric, True when the metric must stay at or above).
THRESHOLDS = (
    ("min_pose_pck", "pose_pck", True),
    ("min_pose_oks", "pose_oks", True),
    ("min_joint_pck", "joint_pck", True),
    ("max_jitter", "jitter", False),
    ("max_appearance_drift", "appearance_drift", False),
    ("min_appearance_ssim", "appearance_ssim", True),
    ("max_seam_score", "seam_score", False),
    ("max_overlap_overhead", "overlap_overhead", False),
)


def verdict(metrics: dict, windows: list[dict], qa) -> list[str]:
    """The reasons a shot needs a re-render (empty: it passes). qa: the QAConfig; a threshold set
    to None is not checked. A reason names the metric, its value, the limit and the worst window."""
    reasons = []
    for key, metric, at_least in THRESHOLDS:
        limit, value = getattr(qa, key), metrics.get(metric)
        if limit is None or value is None or (value >= limit if at_least else value <= limit):
            continue
        reason = f"{metric} {value:.3g} {'<' if at_least else '>'} {limit:g} ({'min' if at_least else 'max'})"
        if metric == "joint_pck":
            reason += f": {metrics.get('joint_pck_worst')} is where the target puts it on {value:.0%} of frames"
        scored = [w for w in windows if w.get(metric) is not None]
        if scored and len(windows) > 1:
            worst = (min if at_least else max)(scored, key=lambda w: w[metric])
            reason += f", worst in window {worst['index']} (frames {worst['start']}-{worst['end'] - 1})"
        reasons.append(reason)
    detected = metrics.get("pose_detected")
    if metrics.get("pose_source") == "mediapipe" and detected is not None and qa.min_pose_detected is not None \
            and detected < qa.min_pose_detected:
        reasons.append(f"pose_detected {detected:.3g} < {qa.min_pose_detected:g} (min): the output's pose was found on "
                       f"{detected:.0%} of frames")
    return reasons


def _someone_else(body33: np.ndarray, target: np.ndarray) -> bool:
    """The person mediapipe found stands more than a torso length from where the target puts the
    character's neck: another person in the picture."""
    neck = body33[[11, 12], :2].mean(axis=0)
    return bool(np.linalg.norm(neck - target[JOINT_INDEX["neck"], :2]) > _torso_length(target))


def _torso_length(joints: np.ndarray) -> float:
    neck, pelvis = joints[JOINT_INDEX["neck"], :2], joints[JOINT_INDEX["pelvis"], :2]
    return float(max(np.linalg.norm(neck - pelvis), 1.0))


def _fit(grey: np.ndarray) -> np.ndarray:
    """A crop scaled so that its longer side is at most SSIM_SIDE (and at least 8 pixels)."""
    h, w = grey.shape[:2]
    scale = min(1.0, SSIM_SIDE / max(h, w, 1))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA) if size != (w, h) else grey


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def write_quality_table(quality: Quality, path) -> None:
    """qa.parquet: one row per output frame with its metrics and the measured and target COCO-17
    points (51 floats: x, y, visibility per point)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from farm.storage.local import write_atomically

    columns = {}
    for name, values in quality.frames.items():
        if values.ndim == 3:
            flat = pa.array(values.reshape(len(values), -1).astype(np.float32).ravel())
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1] * values.shape[2])
        else:
            columns[name] = pa.array(values)
    table = pa.table(columns)
    write_atomically(path, lambda out: pq.write_table(table, out), str(path))


def read_quality_table(path) -> dict[str, np.ndarray]:
    """qa.parquet back as arrays (measured, target: (T, 17, 3))."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    out = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if isinstance(column.type, pa.FixedSizeListType):
            out[name] = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), 17, 3)
        else:
            out[name] = column.to_numpy(zero_copy_only=False)
    return out
