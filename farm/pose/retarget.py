"""Retargeting: the performer's motion on the character's own skeleton (DESIGN §4).

Each bone of the character keeps its own length (times the foreshortening the performer's bone
shows on that frame) and takes the direction of the performer's bone, cascading outward from the
pelvis; the whole body is then placed by the match mode:

- image: the character stays where it stands in its image (pinned at the feet for full-body clips,
  at the neck otherwise) and moves by the performer's displacement, scaled to the character's size;
- video: the character takes the performer's place, scale and framing, frame by frame.

Limbs the video does not show (legs in an upper-body clip) keep the character's rest pose. A clip
that never shows the hips (chest-up, close-up) drives the body from the neck instead: the torso
keeps its rest angle, the head and arms follow the performer, and the displacement is the neck's.
All coordinates are pixels, x right, y down.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farm.errors import FarmError
from farm.rig import BONES, JOINT_INDEX, JOINTS, PARENTS, VISIBLE, bone_lengths
from farm.types import Canvas

SHOWN = 0.25  # share of frames on which a bone must be seen to drive the character at all
FORESHORTEN = (0.5, 1.0)  # bounds of the per-frame length factor taken from the performer

# Bones (indexed like BONES, by child joint - 1) whose left/right lengths are made equal.
_SYMMETRIC = [(3, 6), (4, 7), (5, 8), (9, 12), (10, 13), (11, 14)]
# Ways to measure body size, tried in order; each is a list of bone indices (child joint - 1).
_SIZE_MEASURES = [
    [0, 1, 9, 10, 12, 13],  # torso + head + both thighs and shins
    [0, 1, 2, 5],  # torso + head + both shoulders
    [2, 5],  # shoulders only
]
_ARMS = {"right_arm": (14, 16), "left_arm": (13, 15)}  # mediapipe elbow, wrist
_LEGS = {"right_leg": (26, 28), "left_leg": (25, 27)}  # mediapipe knee, ankle
LIMB_LAYERS = ("right_arm", "left_arm", "right_leg", "left_leg")
_TORSO = [11, 12, 23, 24]  # mediapipe shoulders and hips
# Bones (child joint - 1): pelvis -> neck and neck -> head; the head tilts off the torso by at most
# HEAD_TILT (radians), about as far as a neck bends.
_TORSO_BONE, _HEAD = JOINT_INDEX["neck"] - 1, JOINT_INDEX["head"] - 1
HEAD_TILT = np.deg2rad(35.0)
# A limb this many torso lengths farther from the camera than the torso is drawn behind it.
BEHIND_TORSO = 0.5


@dataclass
class Retargeted:
    """targets: (T, 15, 3) joints on the canvas (x, y, confidence; 0 where the joint is held at the
    character's rest pose or lies outside the character's image). anchor: "feet" or "neck". driven: (14,) bool, bones the motion drives.
    root: the performer's joint the body moves with, "pelvis" or (hips never seen) "neck"."""

    targets: np.ndarray
    canvas: Canvas
    anchor: str
    driven: np.ndarray
    root: str


def retarget(
    driving: np.ndarray,
    video_size: tuple[int, int],
    character: np.ndarray,
    image_size: tuple[int, int],
    *,
    mode: str,
    motion_weight: float,
    anchor: str,
    output_size: int,
    source: str = "motion video",
) -> Retargeted:
    """driving: (T, 15, 3) performer joints in video pixels. character: (15, 3) rest joints in image
    pixels. video_size, image_size: (width, height). output_size: longer canvas side in pixels.
    source: how errors name the motion video (as the user gave it)."""
    # 1. Which bones the video shows, and the performer's reference bone lengths.
    seen = driving[..., 2] >= VISIBLE
    parents = np.array([p for p, _ in BONES])
    children = np.array([c for _, c in BONES])
    bone_seen = seen[:, parents] & seen[:, children]
    driven = bone_seen.mean(axis=0) >= SHOWN
    root = _root_joint(seen, source)
    # The character's joints in its image (mediapipe also rates joints it places off the image, as
    # the knees of a half-body photo).
    has = (character[:, 2] >= VISIBLE) & _inside(character, image_size)
    lengths = bone_lengths(driving)  # (T, 14)
    ref = _reference_lengths(lengths, bone_seen)
    char_lengths = bone_lengths(character)

    # 2. Canvas and the scale from character pixels to canvas pixels.
    canvas = _canvas(mode, video_size, image_size, output_size, ref, char_lengths, driven)

    # 3. Bone directions and lengths per frame, cascaded outward from the pelvis.
    rest_angle = _angles(character[None])[0]
    angle = _held(_angles(driving), bone_seen, fallback=rest_angle)
    # The turn from rest is unwrapped over time: an arm swinging through the far side of its rest
    # direction turns on smoothly instead of flipping from +180° to -180° (a pop when weighted).
    turn = np.unwrap(_wrap(angle - rest_angle), axis=0)
    angle = np.where(driven, rest_angle + motion_weight * turn, rest_angle)
    angle[:, _HEAD] = _head_on_neck(angle, rest_angle)
    factor = _held(np.clip(lengths / np.where(ref > 0, ref, 1.0), *FORESHORTEN), bone_seen, fallback=np.ones(14))
    factor = np.where(driven, 1.0 + motion_weight * (factor - 1.0), 1.0)
    body = _cascade(angle, char_lengths * canvas.scale * factor)  # (T, 15, 2), pelvis at 0

    # 4. Place the body on the canvas, moved by the pelvis (or, hips never seen, the neck).
    anchor = _choose_anchor(anchor, seen, has)
    path = _held(driving[:, root, :2], seen[:, root], fallback=None)
    if mode == "video":
        placed = _place_like_performer(body, driving, root, path, seen, anchor, canvas, video_size)
    else:
        placed = _place_in_image(body, character, path, ref, char_lengths, driven, canvas, anchor, motion_weight)

    # 5. Confidence: the performer's, on joints whose bone the motion drives and that the character
    #    has in its image (a half-body character grows no legs from outside its picture).
    conf = np.zeros(driving.shape[:2], np.float32)
    conf[:, 0] = np.where(has[0], driving[:, 0, 2], 0.0)
    conf[:, children] = np.where(driven & has[children], driving[:, children, 2], 0.0)
    targets = np.concatenate([placed, conf[..., None]], axis=-1).astype(np.float32)
    return Retargeted(targets=targets, canvas=canvas, anchor=anchor, driven=driven, root=JOINTS[root])


def limb_layers(body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Back-to-front order of the four limbs per frame, and how many of them go behind the torso.

    The legs always go behind it (the pelvis covers the tops of the thighs, as in a paper puppet),
    the farther one first. An arm goes behind it when mediapipe's relative depth puts it more than
    BEHIND_TORSO torso lengths farther from the camera than the torso (the far arm of a figure in
    profile); otherwise the arms are drawn over the torso, the nearer one last.

    body: (T, 33, 4) with z in channel 2 (pixels, smaller is closer to the camera).
    Returns order (T, 4) indices into LIMB_LAYERS, back to front, and behind (T,) int: the first
    `behind` limbs of the order are drawn behind the torso.
    """
    limbs = {**_ARMS, **_LEGS}
    depth = np.stack([body[:, list(limbs[name]), 2].mean(axis=1) for name in LIMB_LAYERS], axis=1)
    depth = np.nan_to_num(depth, nan=0.0)
    arms = np.argsort(-depth[:, :2], axis=1, kind="stable")
    legs = 2 + np.argsort(-depth[:, 2:], axis=1, kind="stable")
    order = np.concatenate([legs, arms], axis=1).astype(np.int32)
    torso_depth = body[:, _TORSO, 2].mean(axis=1)
    torso_length = np.linalg.norm(body[:, [11, 12], :2].mean(axis=1) - body[:, [23, 24], :2].mean(axis=1), axis=1)
    far_arms = (depth[:, :2] - torso_depth[:, None] > BEHIND_TORSO * torso_length[:, None]).sum(axis=1)
    seen = body[:, _TORSO, 3].min(axis=1) >= VISIBLE
    return order, (2 + np.where(seen, far_arms, 0)).astype(np.int32)


def _reference_lengths(lengths: np.ndarray, bone_seen: np.ndarray) -> np.ndarray:
    """A robust full (unforeshortened) length per bone: the 90th percentile over frames where the
    bone is seen, left and right made equal to the longer of the pair. 0 for bones never seen."""
    ref = np.zeros(lengths.shape[1])
    for k in range(lengths.shape[1]):
        if bone_seen[:, k].any():
            ref[k] = np.percentile(lengths[bone_seen[:, k], k], 90)
    for a, b in _SYMMETRIC:
        ref[a - 1] = ref[b - 1] = max(ref[a - 1], ref[b - 1])
    return ref


def _body_size(lengths: np.ndarray, usable: np.ndarray) -> tuple[float, list[int]]:
    for bones in _SIZE_MEASURES:
        if usable[bones].all():
            return float(lengths[bones].sum()), bones
    raise FarmError("motion video", "too little of the body is visible to measure its size", "use a clip that shows at least the shoulders")


def _size_ratio(ref: np.ndarray, char_lengths: np.ndarray, driven: np.ndarray) -> float:
    """Performer size / character size, on the first body measure both show."""
    usable = driven & (ref > 0) & (char_lengths > 0)
    size, bones = _body_size(ref, usable)
    return size / float(char_lengths[bones].sum())


def _canvas(mode, video_size, image_size, output_size, ref, char_lengths, driven) -> Canvas:
    base = video_size if mode == "video" else image_size
    fit = output_size / max(base)
    width, height = (_even(base[0] * fit), _even(base[1] * fit))
    if mode == "video":
        # Character pixels -> canvas pixels so that its body is as big as the performer's.
        scale = _size_ratio(ref, char_lengths, driven) * fit
    else:
        scale = width / image_size[0]
    return Canvas(width=width, height=height, scale=scale, mode=mode)


def _root_joint(seen: np.ndarray, source: str) -> int:
    """The joint the performer's displacement is taken from: the pelvis, or the neck when the hips
    never show. seen: (T, 15) bool."""
    if not seen.any():
        raise FarmError(source, "no person was found in the video", "use a clip where one person is clearly visible")
    for name in ("pelvis", "neck"):
        if seen[:, JOINT_INDEX[name]].any():
            return JOINT_INDEX[name]
    raise FarmError(source, "a person is found but neither the hips nor both shoulders are ever in view",
                    "use a clip that shows at least the shoulders")


def _place_in_image(body, character, path, ref, char_lengths, driven, canvas, anchor, weight) -> np.ndarray:
    """The character moves from where it stands in its image by the performer's displacement
    (path: (T, 2) the performer's root joint in video pixels; only its motion counts)."""
    t0 = 0
    px_per_video_px = canvas.scale / _size_ratio(ref, char_lengths, driven)
    root = character[0, :2] * canvas.scale + weight * (path - path[t0]) * px_per_video_px
    placed = body + root[:, None, :]
    rest = character[:, :2] * canvas.scale
    if anchor == "feet":
        ankles = [JOINT_INDEX["right_ankle"], JOINT_INDEX["left_ankle"]]
        placed[..., 1] += rest[ankles, 1].max() - placed[t0, ankles, 1].max()
    else:
        neck = JOINT_INDEX["neck"]
        placed += rest[neck] - placed[t0, neck]
    return placed


def _place_like_performer(body, driving, root, path, seen, anchor, canvas, video_size) -> np.ndarray:
    """The character stands where the performer stands on every frame (path: (T, 2) the
    performer's joint `root` in video pixels)."""
    fit = canvas.width / video_size[0]
    if anchor == "feet":
        ankles = [JOINT_INDEX["right_ankle"], JOINT_INDEX["left_ankle"]]
        # Only ankles actually seen count: mediapipe places unseen ones anywhere, often below the frame.
        seen_y = np.where(seen[:, ankles], driving[:, ankles, 1], -np.inf).max(axis=1)
        ground = _held(seen_y, seen[:, ankles].any(axis=1), fallback=None) * fit
        placed = body - body[:, root : root + 1] + path[:, None, :] * fit
        placed[..., 1] += (ground - placed[:, ankles, 1].max(axis=1))[:, None]
        return placed
    neck = JOINT_INDEX["neck"]
    neck_at = _held(driving[:, neck, :2], seen[:, neck], fallback=None) * fit
    return body - body[:, neck : neck + 1] + neck_at[:, None, :]


def _inside(joints: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., 15) bool: the joint lies inside an image of `size` (width, height)."""
    return (joints[..., :2] >= 0).all(axis=-1) & (joints[..., :2] < np.asarray(size)).all(axis=-1)


def _choose_anchor(anchor: str, seen: np.ndarray, has: np.ndarray) -> str:
    """seen: (T, 15) the performer's joints shown; has: (15,) the character's joints in its image."""
    if anchor != "auto":
        return anchor
    ankles = [JOINT_INDEX["right_ankle"], JOINT_INDEX["left_ankle"]]
    video_feet = seen[:, ankles].all(axis=1).mean() >= 0.5
    character_feet = bool(has[ankles].all())
    return "feet" if video_feet and character_feet else "neck"


def _head_on_neck(angle: np.ndarray, rest_angle: np.ndarray) -> np.ndarray:
    """The head bone's angle (T,), tilted from its rest angle to the torso by at most HEAD_TILT:
    mediapipe's nose swings far off the neck line when a performer looks down or turns away, which
    on a drawing reads as a head snapped over. angle: (T, 14); rest_angle: (14,)."""
    rest = rest_angle[_HEAD] - rest_angle[_TORSO_BONE]
    tilt = np.clip(_wrap(angle[:, _HEAD] - angle[:, _TORSO_BONE] - rest), -HEAD_TILT, HEAD_TILT)
    return angle[:, _TORSO_BONE] + rest + tilt


def _angles(joints: np.ndarray) -> np.ndarray:
    """(T, 15, >=2) -> (T, 14) bone angles in radians."""
    d = joints[:, [c for _, c in BONES], :2] - joints[:, [p for p, _ in BONES], :2]
    return np.arctan2(d[..., 1], d[..., 0])


def _cascade(angle: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Joint positions relative to the pelvis from per-bone angles and lengths: (T, 15, 2)."""
    out = np.zeros(angle.shape[:1] + (len(PARENTS), 2))
    for child in range(1, len(PARENTS)):
        k = child - 1
        step = np.stack([np.cos(angle[:, k]), np.sin(angle[:, k])], axis=-1) * length[..., k, None]
        out[:, child] = out[:, PARENTS[child]] + step
    return out


def _held(values: np.ndarray, valid: np.ndarray, fallback) -> np.ndarray:
    """Carry the last valid value forward (and the first valid one backward) where `valid` is False.

    values: (T, ...) ; valid: (T,) or (T, K) matching values' leading dims. Columns never valid take
    `fallback` (an array broadcastable to one row), or raise if it is None.
    """
    values = np.array(values, dtype=np.float64, copy=True)
    valid = np.asarray(valid)
    t = np.arange(len(values)).reshape((-1,) + (1,) * (valid.ndim - 1))
    last = np.maximum.accumulate(np.where(valid, t, -1), axis=0)
    first = np.argmax(valid, axis=0)
    idx = np.where(last >= 0, last, first)
    gathered = np.take_along_axis(values, idx.reshape(idx.shape + (1,) * (values.ndim - valid.ndim)), axis=0)
    never = ~valid.any(axis=0)
    if never.any():
        if fallback is None:
            raise FarmError(
                "motion video", "a joint needed for placement is never visible", "use a clip where the person is fully in frame"
            )
        gathered = np.where(never.reshape((1,) + never.shape + (1,) * (values.ndim - valid.ndim)), fallback, gathered)
    return gathered


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)
