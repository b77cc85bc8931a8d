"""Checks on a reference video (and character image) before anything is rendered.

They catch the inputs that make a bad animation however good the backend is: several people in
the video (the tracker follows one of them), a video framed differently from the character image
(full body against a close-up), hands that the tracker rarely sees in a gesture clip, and long
stretches with nobody in view.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from farm.media.decode import iter_frames
from farm.media.probe import probe_video
from farm.pose.extract import POSE_PARTS, PoseSequence
from farm.rig import JOINT_INDEX, VISIBLE

TINY_SUBJECT_RATIO = 0.15  # warn when the performer's visible height is below this share of the frame
FAST_MOTION_PER_FRAME = 0.1  # warn when wrists/ankles move more than this many body heights per frame (p95)
HANDS_MIN_RATIO = 0.5  # warn below this share of frames with a hand found (when hands matter)
NO_PERSON_MAX_RATIO = 0.2  # warn above this share of frames without a person
HOG_MIN_SCORE = 0.5  # SVM score of a HOG people detection; below it most hits are clutter
HOG_SIDE = 640  # frames are resized to this longer side before HOG (its window is 64x128)
PERSON_BOX_MARGIN = 0.1  # tracked person's box is widened by this share of its height

_J = JOINT_INDEX
_ANKLES = [_J["right_ankle"], _J["left_ankle"]]
_HIPS = [_J["right_hip"], _J["left_hip"]]
_SHOULDERS = [_J["right_shoulder"], _J["left_shoulder"]]
_ELBOWS = [_J["right_elbow"], _J["left_elbow"]]
_HEAD = [_J["head"], *_SHOULDERS]


@dataclass
class Preflight:
    """people_max: most people seen on one sampled frame; people_note: which one is animated.
    video_framing, image_framing: framing_class of each (image None when no image pose is known).
    hands_visible_ratio: share of frames with a person on which at least one hand was found; None
    when the hands were not tracked (the backend does not read them).
    subject_height_ratio: median height of the performer's visible landmarks / frame height.
    motion_per_frame: 95th percentile over frames of the fastest wrist or ankle step, in body heights
    per frame (what the tracker must follow from one frame to the next).
    warnings: one line each, what is wrong and what to do."""

    people_max: int
    people_note: str
    video_framing: str
    image_framing: str | None
    framing_match: bool
    hands_visible_ratio: float | None
    subject_height_ratio: float
    motion_per_frame: float
    warnings: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def framing_class(joints15: np.ndarray, height: int) -> str:
    """How much of the body a (15, 3) rig pose shows in an image `height` pixels high.

    "full_body": both ankles visible (conf >= 0.5 and inside the image); "upper_body": both hips,
    or both shoulders and both elbows visible; "close_up": head or shoulders only; "no_person":
    none of those.
    """
    visible = (joints15[:, 2] >= VISIBLE) & (joints15[:, 1] >= 0) & (joints15[:, 1] < height)
    if visible[_ANKLES].all():
        return "full_body"
    if visible[_HIPS].all() or visible[_SHOULDERS + _ELBOWS].all():
        return "upper_body"
    if visible[_HEAD].any():
        return "close_up"
    return "no_person"


def video_framing(joints: np.ndarray, height: int) -> str:
    """Most common framing_class over the frames of (T, 15, 3) joints that show a person."""
    classes = Counter(framing_class(frame, height) for frame in joints)
    people = {name: n for name, n in classes.items() if name != "no_person"}
    return max(people, key=people.get) if people else "no_person"


def count_people(path: str | Path, poses: PoseSequence, *, samples: int = 8) -> tuple[int, str]:
    """Most people seen on `samples` evenly spaced frames, and a note on whom motion comes from:
    others_seen(path, samples=samples).count(poses), in one call."""
    return others_seen(path, samples=samples).count(poses)


@dataclass
class OthersSeen:
    """What the people detectors saw on the sampled frames of a video (others_seen): per frame,
    its index, (width, height), and the HOG people and face boxes (N, 4) in frame pixels."""

    frames: list[tuple[int, tuple[int, int], np.ndarray, np.ndarray]]

    def count(self, poses: PoseSequence) -> tuple[int, str]:
        """Most people on one sampled frame, and the note, with the performer tracked in `poses`.

        On each frame the performer counts as one; HOG people detections and full-range face
        detections whose centres fall outside the performer's box are others (HOG also fires on
        parts of the performer, so its raw count overcounts). The frame's count is
        1 + max(other HOG, other faces), or max(HOG, faces) on a frame without the performer."""
        best_count, best_centre = 0, None
        for index, (width, height), people, faces in self.frames:
            count, centre = _count_on_frame(_performer(poses, index), width, height, people, faces)
            if count > best_count:
                best_count, best_centre = count, centre
        return best_count, _people_note(best_count, best_centre, len(self.frames))


def others_seen(path: str | Path, *, samples: int = 8) -> OthersSeen:
    """The people detectors' half of count_people, on `samples` evenly spaced frames. It needs no
    poses, so it can run while they are extracted; the tracker's poses then stand in for a pose
    detector of its own (no second mediapipe Pose graph: about 110 MB, and a pose a frame)."""
    import mediapipe as mp

    probe = probe_video(path)
    indices = np.unique(np.linspace(0, max(probe.frame_count - 1, 0), samples).round().astype(int))
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    frames = []
    with mp.solutions.face_detection.FaceDetection(model_selection=1) as face_detector:
        for index in indices.tolist():
            for rgb in iter_frames(path, start=index, stop=index + 1):
                frames.append((index, (rgb.shape[1], rgb.shape[0]), _hog_people(hog, rgb), _faces(face_detector, rgb)))
    return OthersSeen(frames)


def _performer(poses: PoseSequence, index: int) -> np.ndarray | None:
    """The performer's 33 body landmarks on frame `index` of the video, None where the tracker
    found nobody (or the poses do not cover the frame)."""
    at = index - poses.start
    if not 0 <= at < len(poses.body) or poses.body[at, :, 3].max(initial=0.0) <= 0.0:
        return None
    return poses.body[at]


def run_preflight(
    video_path: str | Path,
    video_pose: PoseSequence,
    image_joints15: np.ndarray | None,
    image_height: int | None,
    people: tuple[int, str] | None = None,
    *,
    parts: tuple[str, ...] = POSE_PARTS,
) -> Preflight:
    """All checks on a reference video (with its extracted poses) and the character's pose.

    image_joints15: (15, 3) rig pose of the character image, None when it is unknown (e.g. a
    drawing mediapipe cannot read); image_height: that image's height in pixels. Hands are only
    checked in upper_body and close_up videos, where they are a large part of the picture, and
    only when they were tracked. people: count_people's answer when it was computed elsewhere
    (e.g. alongside pose extraction). parts: the pose parts video_pose holds (farm.pose.extract.POSE_PARTS).
    """
    # 1. People in the video
    people_max, people_note = people or count_people(video_path, video_pose)
    warnings = []
    if people_max > 1 and video_pose.subject is not None:
        # motion.subject chose the performer: no warning, the note says whom.
        people_note = f"{people_max} people seen; motion is taken from the one motion.subject={video_pose.subject['subject']} picks"
    elif people_max > 1:
        warnings.append(f"{people_note} — trim or crop the reference to the one person you want "
                        f"animated, or pick one with motion.subject")

    # 2. Framing of video and image
    found = video_pose.person_found()
    v_framing = video_framing(video_pose.rig()[found], video_pose.height)
    i_framing = None
    if image_joints15 is not None and image_height is not None:
        i_framing = framing_class(image_joints15, image_height)
    framing_match = i_framing is None or i_framing == v_framing
    if not framing_match:
        warnings.append(f"the video is {v_framing} but the character image is {i_framing}; body "
                        f"parts one shows and the other does not will be invented or held still "
                        f"— use a reference whose framing matches the character image")

    # 3. Hands, where the framing makes them a large part of the picture and the backend reads them
    hands_ratio = _hands_ratio(video_pose, found) if "hands" in parts else None
    if hands_ratio is not None and v_framing in ("upper_body", "close_up") and hands_ratio < HANDS_MIN_RATIO:
        warnings.append(f"hands are found on only {hands_ratio:.0%} of frames of this "
                        f"{v_framing} video, so gestures will not come through — use a reference "
                        f"where the hands stay in view and are not blurred")

    # 4. Frames with nobody in view
    no_person = 1.0 - float(found.mean()) if len(found) else 1.0
    if no_person > NO_PERSON_MAX_RATIO:
        warnings.append(f"no person is found on {no_person:.0%} of frames; the character holds "
                        f"still there — trim the reference to where the performer is in view")

    # 5. A tiny performer, and motion too fast for the frame rate
    height_ratio, per_frame = subject_size_and_speed(video_pose)
    if found.any() and height_ratio < TINY_SUBJECT_RATIO:
        warnings.append(f"the performer fills only {height_ratio:.0%} of the frame height, so the pose is "
                        f"coarse — crop the reference closer to the performer")
    if per_frame > FAST_MOTION_PER_FRAME:
        warnings.append(f"hands or feet move up to {per_frame:.2f} body heights between frames, too fast for "
                        f"{video_pose.fps:.3g} fps: expect tracking slips — use a higher frame rate or slower motion")

    return Preflight(people_max=people_max, people_note=people_note, video_framing=v_framing,
                     image_framing=i_framing, framing_match=framing_match,
                     hands_visible_ratio=hands_ratio, subject_height_ratio=round(height_ratio, 3),
                     motion_per_frame=round(per_frame, 3), warnings=warnings)


def _hands_ratio(poses: PoseSequence, found: np.ndarray) -> float:
    """Share of the frames `found` (with a person) on which at least one hand was found."""
    hands = (poses.left_hand[..., 2].max(axis=-1) > 0) | (poses.right_hand[..., 2].max(axis=-1) > 0)
    return float(hands[found].mean()) if found.any() else 0.0


def subject_size_and_speed(poses: PoseSequence) -> tuple[float, float]:
    """(median visible height / frame height, p95 of the fastest wrist-or-ankle step per frame in
    body heights); zeros when nobody is seen."""
    body = poses.body
    seen = body[..., 3] >= VISIBLE
    found = seen.any(axis=1)
    if not found.any():
        return 0.0, 0.0
    ys = np.where(seen, body[..., 1], np.nan)[found]
    height = float(np.median(np.nanmax(ys, axis=1) - np.nanmin(ys, axis=1)))
    ends = [15, 16, 27, 28]  # mediapipe wrists and ankles
    step = np.linalg.norm(np.diff(body[:, ends, :2], axis=0), axis=-1)
    both = seen[1:, ends] & seen[:-1, ends]
    fastest = np.where(both, step, 0.0).max(axis=1)[both.any(axis=1)]
    per_frame = float(np.percentile(fastest, 95)) / max(height, 1.0) if len(fastest) else 0.0
    return height / poses.height, per_frame


def _count_on_frame(body: np.ndarray | None, width: int, height: int, people: np.ndarray,
                    faces: np.ndarray) -> tuple[int, float | None]:
    """People on one frame, and the performer's centre as a share of the width (None when the
    performer is not on it)."""
    person = None if body is None else _person_box(body, width, height)
    others = max(len(_outside(boxes, person)) for boxes in (people, faces))
    if person is None:
        return others, None
    return 1 + others, float(person[0] + person[2]) / 2 / width


def _person_box(body33: np.ndarray, width: int, height: int) -> np.ndarray:
    """(x0, y0, x1, y1) around all landmarks, clipped to the frame and widened by a margin, so
    loose clothing and detections of the person's parts fall inside."""
    lo = np.clip(body33[:, :2].min(axis=0), 0, [width, height])
    hi = np.clip(body33[:, :2].max(axis=0), 0, [width, height])
    margin = PERSON_BOX_MARGIN * (hi[1] - lo[1])
    return np.concatenate([lo - margin, hi + margin])


def _hog_people(hog: cv2.HOGDescriptor, rgb: np.ndarray) -> np.ndarray:
    """(N, 4) x0, y0, x1, y1 boxes of people, in frame pixels, after non-max suppression."""
    height, width = rgb.shape[:2]
    scale = HOG_SIDE / max(height, width)
    small = cv2.resize(rgb, (round(width * scale), round(height * scale)),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    boxes, scores = hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
    if len(boxes) == 0:
        return np.zeros((0, 4))
    keep = np.asarray(cv2.dnn.NMSBoxes(np.asarray(boxes).tolist(), np.ravel(scores).tolist(),
                                       HOG_MIN_SCORE, 0.3), dtype=int).ravel()
    boxes = np.asarray(boxes, dtype=float)[keep] / scale
    return np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]])


def _faces(detector, rgb: np.ndarray) -> np.ndarray:
    """(N, 4) x0, y0, x1, y1 face boxes in frame pixels."""
    height, width = rgb.shape[:2]
    boxes = []
    for detection in detector.process(np.ascontiguousarray(rgb)).detections or []:
        box = detection.location_data.relative_bounding_box
        boxes.append([box.xmin * width, box.ymin * height,
                      (box.xmin + box.width) * width, (box.ymin + box.height) * height])
    return np.asarray(boxes, dtype=float).reshape(-1, 4)


def _outside(boxes: np.ndarray, person: np.ndarray | None) -> np.ndarray:
    """The boxes whose centres lie outside the tracked person's box (all of them without one)."""
    if person is None:
        return boxes
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = np.all((centres >= person[:2]) & (centres <= person[2:]), axis=1)
    return boxes[~inside]


def _people_note(count: int, centre: float | None, samples: int) -> str:
    if count == 0:
        return f"no person seen on {samples} sampled frames"
    if count == 1:
        return "1 person seen"
    where = "" if centre is None else f", centred at x≈{centre:.0%} of the width"
    return (f"{count} people seen; motion is taken from the most prominent one (largest{where})")
