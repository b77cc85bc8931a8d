"""Body, hand and face landmarks of the performer in a video, with mediapipe 0.10.21.

Only the legacy `mediapipe.solutions` API ships its models inside the wheel, and only at
model_complexity=1 (lite and heavy are downloaded at run time, which fails offline).

Coordinates are pixels of the source frame (x right, y down, origin top-left); "left" and "right"
are the performer's own sides, as in farm.rig. A part that was not found on a frame (no person, a
hand out of view, a part not asked for) is all zeros there: x = y = z = 0 and confidence 0, so
arrays never hold NaN and readers filter on confidence.

The parts tracked (POSE_PARTS: body, hands, face) are what a shot's backend reads
(BackendSpec.pose_parts): the body alone runs mediapipe's Pose graph, hands or face its Holistic
graph, which runs the same body model (equal to the bit on the ASL clip). Speed on one core of
the 2-core CPU box, in frames per CPU second, on the 640x480 ASL book clip with decode, smoothing
and the graph's start-up (measured as `make bench`'s pose_parts measures): Holistic (body +
hands + face) ≈ 14, the body alone ≈ 29-32, a bare mediapipe Pose loop over frames decoded
beforehand ≈ 30-35. Holistic always runs its face model, so face=False saves no time.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from farm.errors import FarmError
from farm.media.decode import iter_frames
from farm.media.probe import probe_video
from farm.native import TRIM_EVERY, give_memory_back
from farm.pose.smooth import one_euro
from farm.pose.subject import follow_subject, parse_subject
from farm.rig import JOINT_INDEX, VISIBLE, from_mediapipe

BODY_POINTS, HAND_POINTS, FACE_POINTS = 33, 21, 468
# The parts of a pose that can be asked for, in this order wherever they are listed; the body is
# always tracked (the rig, the retargeting and preflight are made from it).
POSE_PARTS = ("body", "hands", "face")


@dataclass
class PoseSequence:
    """Landmarks of one performer over T consecutive frames of a video.

    All arrays float32; x, y in pixels of the source frame; the last channel is the confidence in
    [0, 1]. body: (T, 33, 4) x, y, z, visibility in mediapipe's landmark order; z is mediapipe's
    depth relative to the hips, scaled like x (pixels), negative towards the camera.
    left_hand, right_hand: (T, 21, 3) x, y, conf in mediapipe's hand order (also OpenPose's);
    face: (T, 468, 3) face-mesh landmarks. Hands and face have conf 1 on frames where the part was
    found and all zeros elsewhere; body visibility is 0 everywhere on frames without a person.
    start: index in the source video of the first frame; fps, width, height: the source's.
    subject: how the performer was picked among several people (farm.pose.subject.follow_subject's
    record), None when mediapipe's most prominent person was taken.
    """

    body: np.ndarray
    left_hand: np.ndarray
    right_hand: np.ndarray
    face: np.ndarray
    fps: float
    width: int
    height: int
    start: int
    subject: dict | None = None

    def __len__(self) -> int:
        return self.body.shape[0]

    def rig(self) -> np.ndarray:
        """(T, 15, 3) rig joints: x, y, confidence (see farm.rig)."""
        return from_mediapipe(self.body[..., [0, 1, 3]])

    def person_found(self) -> np.ndarray:
        """(T,) bool: frames on which mediapipe found a person."""
        return self.body[..., 3].max(axis=-1, initial=0.0) > 0.0

    def only(self, parts: tuple[str, ...]) -> PoseSequence:
        """This sequence with the hands and face left out (all zeros, as an extraction that did
        not track them leaves them) unless `parts` (of POSE_PARTS) names them; the body is kept."""
        return dataclasses.replace(
            self,
            left_hand=self.left_hand if "hands" in parts else np.zeros_like(self.left_hand),
            right_hand=self.right_hand if "hands" in parts else np.zeros_like(self.right_hand),
            face=self.face if "face" in parts else np.zeros_like(self.face),
        )


def chunk_bounds(frame_count: int, chunk_frames: int, workers: int) -> list[int]:
    """Frame-range bounds [0, ..., frame_count] for extracting a video's poses in parallel: about
    chunk_frames per chunk and a whole number of chunks per worker, so none idles in the last
    round; [0, frame_count] (one chunk) for a video of chunk_frames or fewer. The farm's Ray
    runtime and a local render cut the same chunks for the same number of CPUs."""
    if frame_count <= chunk_frames:
        return [0, frame_count]
    workers = max(1, workers)
    count = max(1, round(frame_count / chunk_frames / workers)) * workers
    return np.linspace(0, frame_count, count + 1).round().astype(int).tolist()


def concat_poses(parts: list[PoseSequence]) -> PoseSequence:
    """Join consecutive frame ranges of one video (e.g. chunks extracted in parallel) into one."""
    first = parts[0]
    for before, after in zip(parts, parts[1:]):
        if after.start != before.start + len(before):
            raise ValueError(f"pose chunks are not consecutive: {before.start}+{len(before)} then {after.start}")
    return PoseSequence(
        body=np.concatenate([p.body for p in parts]),
        left_hand=np.concatenate([p.left_hand for p in parts]),
        right_hand=np.concatenate([p.right_hand for p in parts]),
        face=np.concatenate([p.face for p in parts]),
        fps=first.fps, width=first.width, height=first.height, start=first.start, subject=first.subject,
    )


@dataclass
class LandmarkOptions:
    """hands, face: also track them (mediapipe Holistic; plain Pose when both are off). In a
    shot they allow a part, and the backend decides whether it is tracked (farm.shot.tools.shot_pose_options).
    warmup_frames: frames decoded before `start` so the tracker has locked on by `start`; their
    results are dropped. smoothing: One-Euro filter (farm.pose.smooth) with min_cutoff and
    d_cutoff in Hz and beta per body size per second (coordinates are divided by the performer's
    size in pixels while filtering)."""

    hands: bool = True
    face: bool = True
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    warmup_frames: int = 8
    smoothing: bool = True
    min_cutoff: float = 1.0
    beta: float = 2.0
    d_cutoff: float = 1.0

    def parts(self) -> tuple[str, ...]:
        """The parts these options track, in POSE_PARTS order."""
        return tuple(part for part in POSE_PARTS if part == "body" or getattr(self, part))


@dataclass
class PoseOptions(LandmarkOptions):
    """LandmarkOptions, and subject: which person performs (`motion.subject`, see
    farm.pose.subject.parse_subject); None for the most prominent one, as mediapipe tracks it."""

    subject: str | None = None


def extract_poses(
    path: str | Path,
    *,
    start: int = 0,
    stop: int | None = None,
    options: PoseOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> PoseSequence:
    """Track the performer on frames start..stop-1 (stop None: to the end): the most prominent
    person (mediapipe in tracking mode, static_image_mode=False, one landmarker for the whole
    call), or with options.subject the person it picks, followed by farm.pose.subject.
    progress(n) is called after each frame of the range with the number of frames done so far.
    options: None for the defaults of PoseOptions.
    """
    options = options or PoseOptions()
    # 1. Check inputs
    probe = probe_video(path)
    if start < 0 or (stop is not None and stop <= start):
        raise FarmError(path, f"frame range {start}..{stop} is empty",
                        f"give 0 <= start < stop (the video has {probe.frame_count} frames)")
    rule = parse_subject(options.subject)
    # The subject is picked on the range's first frame, so it has no warm-up.
    first = start if rule is not None else max(0, start - options.warmup_frames)
    warmup = start - first

    # 2. Landmarks on every frame from the warm-up on
    frames: list[tuple[np.ndarray, ...]] = []
    subject: dict | None = {"subject": options.subject} if rule is not None else None
    with _landmarker(options, static=rule is not None) as landmarker:
        if rule is None:
            found = (_read_result(landmarker.process(rgb), rgb.shape[1], rgb.shape[0])
                     for rgb in iter_frames(path, start=first, stop=stop))
        else:
            found = (parts or _read_result(None, 0, 0) for parts in follow_subject(
                iter_frames(path, start=first, stop=stop), _detector(landmarker), rule, float(probe.fps),
                source=str(path), record=subject))
        for parts in found:
            frames.append(parts)
            if len(frames) % TRIM_EVERY == 0:
                give_memory_back()  # the graph's freed buffers, before they fragment the heap
            if progress is not None and len(frames) > warmup:
                progress(len(frames) - warmup)
    if len(frames) <= warmup:
        raise FarmError(path, f"has no frames from {start} on (it has {probe.frame_count})",
                        "pick a start inside the video")
    body, left_hand, right_hand, face = (np.stack(part) for part in zip(*frames, strict=True))
    if not options.hands:
        left_hand[:], right_hand[:] = 0.0, 0.0
    if not options.face:
        face[:] = 0.0

    # 3. Smooth, warm-up included so the filters are settled by `start`
    if options.smoothing:
        _smooth_in_place((body, left_hand, right_hand, face), probe.fps, options,
                         default_scale=float(probe.height))

    return PoseSequence(
        body=body[warmup:], left_hand=left_hand[warmup:], right_hand=right_hand[warmup:],
        face=face[warmup:], fps=float(probe.fps), width=int(probe.width),
        height=int(probe.height), start=start, subject=subject,
    )


def detect_image_pose(rgb: np.ndarray) -> np.ndarray | None:
    """Body landmarks of the most prominent person in one still image.

    rgb: (H, W, 3) uint8. Returns (33, 4) float32 x, y (pixels), z, visibility, or None when
    mediapipe finds no person (typical for drawings and cartoons). One pass on the image as it is;
    search_image_pose also looks at padded and cropped views, as for character images.
    """
    with image_pose_detector() as detect:
        return detect(rgb)


@dataclass(frozen=True)
class ImagePose:
    """A person found in a still image by search_image_pose.

    body: (33, 4) as detect_image_pose returns, in pixels of the whole image. box: (x, y, w, h),
    the view of the image mediapipe found the person in; it reaches past the image where that view
    was padded. view: that view in words ("full image", "padded square", "crop 0.5 top-left").
    """

    body: np.ndarray
    box: tuple[int, int, int, int]
    view: str


# Crops searched, as a share of each side of the image, each on a 3x3 grid of positions.
SEARCH_CROPS = (0.75, 0.5)
# A later view replaces the best so far only with this much more summed rig confidence (about one
# joint more seen), so a crop's made-up pose does not beat the whole image's on noise.
SEARCH_MARGIN = 1.0
# Padding around a view: a plain mid-grey backdrop.
PAD_LEVEL = 127


def search_image_pose(rgb: np.ndarray) -> ImagePose | None:
    """Find the most prominent person in a still image as a person detector would.

    mediapipe's pose detector sees the image shrunk onto a square and misses people that a view
    of part of the image shows plainly (a figure filling a tall photo, a stylized one, someone
    small in a wide scene). The views searched, in order: the whole image, the image padded to the
    model's square, then crops (SEARCH_CROPS) on a 3x3 grid. Each view's pose is scored by the
    summed confidence of the 15 rig joints it shows inside the view; poses that are not upright
    (head above neck above pelvis, both shoulders seen, legs hanging down) are dropped. The first view showing all 15
    joints ends the search, so a plain full-body photo costs one pass. None: no view shows a person.
    """
    height, width = rgb.shape[:2]
    best, best_score = None, 0.0
    with image_pose_detector() as detect:
        for view, box in _search_views(width, height):
            body = detect(view_image(rgb, box))
            if body is None:
                continue
            body[:, 0] += box[0]
            body[:, 1] += box[1]
            confidence = _shown_confidence(body, box, width, height)
            if confidence is None:
                continue
            if best is None or confidence.sum() > best_score + SEARCH_MARGIN:
                best, best_score = ImagePose(body, box, view), float(confidence.sum())
            if (confidence >= VISIBLE).all():
                break
    return best


def _search_views(width: int, height: int) -> Iterator[tuple[str, tuple[int, int, int, int]]]:
    yield "full image", (0, 0, width, height)
    if width != height:
        side = max(width, height)
        yield "padded square", ((width - side) // 2, (height - side) // 2, side, side)
    rows, cols = ("top", "middle", "bottom"), ("left", "centre", "right")
    for share in SEARCH_CROPS:
        w, h = round(share * width), round(share * height)
        for r, row in enumerate(rows):
            for c, col in enumerate(cols):
                where = "centre" if (row, col) == ("middle", "centre") else f"{row}-{col}"
                yield f"crop {share} {where}", (c * (width - w) // 2, r * (height - h) // 2, w, h)


def view_image(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of box, grey where it reaches past the image."""
    import cv2

    x, y, w, h = box
    height, width = rgb.shape[:2]
    inside = rgb[max(y, 0):min(y + h, height), max(x, 0):min(x + w, width)]
    return cv2.copyMakeBorder(inside, max(-y, 0), max(y + h - height, 0), max(-x, 0), max(x + w - width, 0),
                              cv2.BORDER_CONSTANT, value=(PAD_LEVEL,) * 3)


def _shown_confidence(body: np.ndarray, box: tuple[int, int, int, int], width: int, height: int) -> np.ndarray | None:
    """(15,) rig joint confidences, 0 for joints outside the view or the image; None when the pose
    is not an upright person's (a view of a hand or a fold of cloth read as a body)."""
    rig = from_mediapipe(body[:, [0, 1, 3]])
    x, y = rig[:, 0], rig[:, 1]
    left, top = max(box[0], 0), max(box[1], 0)
    right, bottom = min(box[0] + box[2], width), min(box[1] + box[3], height)
    inside = (x >= left) & (x < right) & (y >= top) & (y < bottom)
    confidence = np.where(inside, rig[:, 2], 0.0)
    seen = confidence >= VISIBLE
    if not y[JOINT_INDEX["head"]] < y[JOINT_INDEX["neck"]] < y[JOINT_INDEX["pelvis"]]:
        return None
    if not (seen[JOINT_INDEX["left_shoulder"]] and seen[JOINT_INDEX["right_shoulder"]]):
        return None
    # Legs hang down: a knee seen above its hip, or a foot above its knee, is an arm or a
    # fold of cloth taken for a leg.
    for side in ("left", "right"):
        hip, knee, ankle = (JOINT_INDEX[f"{side}_{part}"] for part in ("hip", "knee", "ankle"))
        for upper, lower in ((hip, knee), (knee, ankle)):
            if seen[upper] and seen[lower] and y[lower] <= y[upper]:
                return None
    return confidence


@contextmanager
def image_pose_detector(*, tracking: bool = False) -> Iterator[Callable[[np.ndarray], np.ndarray | None]]:
    """detect_image_pose for many images, with one mediapipe graph for all of them. tracking:
    the images are consecutive frames of one video (mediapipe's tracking mode, unsmoothed)."""
    with _landmarker(PoseOptions(hands=False, face=False), static=not tracking) as landmarker:

        def detect(rgb: np.ndarray) -> np.ndarray | None:
            result = landmarker.process(np.ascontiguousarray(rgb))
            if result.pose_landmarks is None:
                return None
            return _landmark_array(result.pose_landmarks, rgb.shape[1], rgb.shape[0],
                                   visibility=True)

        yield detect


@contextmanager
def _landmarker(options: PoseOptions, *, static: bool) -> Iterator:
    # Imported here: mediapipe takes ~1 s to import and most of farm never needs it.
    import mediapipe as mp

    common = {
        "static_image_mode": static,
        "model_complexity": 1,
        # Our own One-Euro filter replaces mediapipe's, so there is one set of smoothing knobs.
        "smooth_landmarks": False,
        "min_detection_confidence": options.min_detection_confidence,
        "min_tracking_confidence": options.min_tracking_confidence,
    }
    if options.hands or options.face:
        # refine_face_landmarks off: 468 mesh points, no iris (478 with it).
        landmarker = mp.solutions.holistic.Holistic(refine_face_landmarks=False, **common)
    else:
        landmarker = mp.solutions.pose.Pose(**common)
    try:
        yield landmarker
    finally:
        landmarker.close()


def _detector(landmarker) -> Callable[[np.ndarray], tuple[np.ndarray, ...] | None]:
    """One image -> _read_result's arrays in its pixels, or None when it shows nobody."""

    def detect(rgb: np.ndarray) -> tuple[np.ndarray, ...] | None:
        result = landmarker.process(rgb)
        if getattr(result, "pose_landmarks", None) is None:
            return None
        return _read_result(result, rgb.shape[1], rgb.shape[0])

    return detect


def _read_result(result, width: int, height: int) -> tuple[np.ndarray, ...]:
    """mediapipe output -> body (33, 4), left hand (21, 3), right hand (21, 3), face (468, 3)."""
    body = getattr(result, "pose_landmarks", None)
    parts = [
        _landmark_array(body, width, height, visibility=True) if body is not None
        else np.zeros((BODY_POINTS, 4), np.float32)
    ]
    for name, count in (("left_hand_landmarks", HAND_POINTS), ("right_hand_landmarks", HAND_POINTS),
                        ("face_landmarks", FACE_POINTS)):
        found = getattr(result, name, None)
        parts.append(_landmark_array(found, width, height, visibility=False) if found is not None
                     else np.zeros((count, 3), np.float32))
    return tuple(parts)


def _landmark_array(landmarks, width: int, height: int, *, visibility: bool) -> np.ndarray:
    """Normalised mediapipe landmarks -> pixels. visibility: (N, 4) x, y, z, visibility;
    otherwise (N, 3) x, y, 1."""
    if visibility:
        rows = [(p.x * width, p.y * height, p.z * width, p.visibility) for p in landmarks.landmark]
    else:
        rows = [(p.x * width, p.y * height, 1.0) for p in landmarks.landmark]
    return np.asarray(rows, dtype=np.float32)


def _smooth_in_place(parts: tuple[np.ndarray, ...], fps: float, options: PoseOptions, *,
                     default_scale: float) -> None:
    """One-Euro filter on every part, normalised by the performer's size in pixels."""
    body = parts[0]
    scale = _body_size(body) or default_scale
    for part in parts:
        coords = slice(0, part.shape[-1] - 1)  # all channels but the confidence
        part[..., coords] = one_euro(
            part[..., coords], fps, confidence=part[..., -1], min_cutoff=options.min_cutoff,
            beta=options.beta, d_cutoff=options.d_cutoff, scale=scale,
        )


def _body_size(body: np.ndarray) -> float | None:
    """Median over frames of the larger side of the seen landmarks' bounding box, in pixels;
    None when no frame shows a person."""
    seen = body[..., 3] >= VISIBLE
    sizes = []
    for points, mask in zip(body[..., :2], seen, strict=True):
        if mask.sum() >= 2:
            extent = points[mask].max(axis=0) - points[mask].min(axis=0)
            sizes.append(float(extent.max()))
    return float(np.median(sizes)) if sizes else None
