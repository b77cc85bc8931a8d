"""Measuring the pose of a character the pose detector cannot see, from the output's pixels
(DESIGN §7): each body part's texture in the character image is looked for in the frame.

A part is a patch of the character image:
- the torso: a block of the torso's own pixels, which places the shoulders and hips (in a drawing
  they sit where the outlines of limbs and torso cross, with no texture of their own);
- the head, wrists and ankles: a disc around the joint, turned with the bone ending there;
- the elbows and knees: the half-disc on the forearm's or shin's side of the joint, turned with
  that bone (the side that bends with the joint; a disc would hold two bones turning apart). On a
  frame where the target folds the limb sharper than FOLD degrees, the bend lies under the limb
  folded onto it and is not measured.

On each frame a patch is turned by the angle its bone turns from the rest pose to the target pose,
scaled by the target's torso over the rest torso, and searched for around where the target puts it
by normalised cross-correlation (cv2.matchTemplate, TM_CCOEFF_NORMED) on the character's pixels
only. Its joints are where it is found: the target joints moved by the offset found. Nothing here
knows how a backend draws: a part drawn in the wrong place, or not drawn at all, is measured as
such (the search reaches SEARCH torso lengths; a best match poorer than MIN_SCORE is a part not
found). Where places match within TIE of the best, the one nearest the target is taken: the
picture cannot tell them apart, so it does not say the part is elsewhere.

A patch on a plain stretch of limb would slide along it (a drawing's limb is two lines): a part
whose patch matches its own image nearly as well elsewhere (`measurable_parts`) is not measured on
that character, and says so.

Frames are searched at the scale where the torso is WORK_TORSO pixels long, so a frame costs the
same at any output size (6-8 ms of one core at 512 px here).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from farm.rig import JOINT_INDEX, JOINTS, PARENTS

WORK_TORSO = 64.0  # px: frames are searched at the scale where the target torso is this long
PATCH = 0.3  # radius of a head or limb patch, in torso lengths
TORSO_PATCH = 0.6  # radius of the torso block, in torso lengths
TORSO_GROW = 0.2  # the torso's pixels: inside its joints' outline grown by this many torso lengths
SEARCH = 0.45  # how far from where the target puts it a part is looked for, in torso lengths
MIN_SCORE = 0.3  # correlation below this: the part is not in the frame near its target
TIE = 0.05  # correlations this close to the best cannot be told apart
AMBIGUOUS = 0.85  # a patch matching its own image this well further than 0.1 torso off cannot be placed
FOLD = 45.0  # degrees between upper and lower bone: a bend folded sharper is hidden under the limb
MIN_TEXTURE = 4.0  # grey levels (standard deviation): a flatter patch cannot be placed


@dataclass(frozen=True)
class Part:
    """A tracked patch: centred on the mean of `centre` joints, turned with `bone` (from, to
    joint), `radius` torso lengths; where it is found places `joints`. half: only the pixels on
    the bone's side of the centre."""

    name: str
    centre: tuple[int, ...]
    bone: tuple[int, int]
    radius: float
    joints: tuple[int, ...]
    half: bool = False


def _end(joint: str) -> Part:
    j = JOINT_INDEX[joint]
    return Part(joint, (j,), (PARENTS[j], j), PATCH, (j,))


def _bend(joint: str, below: str) -> Part:
    j = JOINT_INDEX[joint]
    return Part(joint, (j,), (j, JOINT_INDEX[below]), PATCH, (j,), half=True)


_J = JOINT_INDEX
PARTS = (
    Part("torso", (_J["neck"], _J["pelvis"]), (_J["pelvis"], _J["neck"]), TORSO_PATCH,
         (_J["right_shoulder"], _J["left_shoulder"], _J["right_hip"], _J["left_hip"])),
    *(_end(name) for name in ("head", "right_wrist", "left_wrist", "right_ankle", "left_ankle")),
    *(_bend(a, b) for a, b in (("right_elbow", "right_wrist"), ("left_elbow", "left_wrist"),
                               ("right_knee", "right_ankle"), ("left_knee", "left_ankle"))),
)
# The joints measured: the 13 COCO points the rig has.
TRACKED = tuple(sorted(j for part in PARTS for j in part.joints))
_TORSO_OUTLINE = tuple(_J[n] for n in ("neck", "right_shoulder", "right_hip", "pelvis", "left_hip", "left_shoulder"))


@dataclass(frozen=True)
class Texture:
    """What is looked for: the character's grey image, one weight image per part (uint8, 1 on the
    pixels its patch compares), the rest joints (15, 2) image px and torso length, and whether each
    part can be placed on this character."""

    grey: np.ndarray
    weights: tuple[np.ndarray, ...]
    rest: np.ndarray
    torso: float
    measurable: tuple[bool, ...]

    @classmethod
    def of(cls, character) -> Texture:
        """character: farm.types.Character."""
        grey = cv2.cvtColor(character.image, cv2.COLOR_RGB2GRAY)
        rest = np.asarray(character.joints, np.float64)[:, :2]
        torso = _length(rest)
        # One pixel beyond the mask: a drawing's outline is its texture, and the mask may stop on it.
        mask = cv2.dilate(character.mask.astype(np.uint8), np.ones((3, 3), np.uint8))
        body = np.zeros_like(mask)
        cv2.fillConvexPoly(body, cv2.convexHull(np.round(rest[list(_TORSO_OUTLINE)]).astype(np.int32)), 1)
        grow = max(1, int(round(TORSO_GROW * torso)))
        body = cv2.dilate(body, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))) & mask
        weights = tuple(body if part.name == "torso" else _side(mask, rest, part) if part.half else mask
                        for part in PARTS)
        return cls(grey, weights, rest, torso, measurable_parts(grey, weights, rest))

    def measured(self) -> list[str]:
        """The joints measured on this character (those of the parts that can be placed)."""
        return [JOINTS[j] for k, part in enumerate(PARTS) if self.measurable[k] for j in part.joints]


def track_joints(texture: Texture, frame: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(15, 3) where each tracked joint is in `frame`: x, y canvas px and the part's correlation
    where found, 0 where not found near its target; nan where it is not measured: its part cannot
    be placed on this character, the target puts the part off the frame or folds its limb onto
    the joint; and for the joints not tracked.

    frame: (H, W, 3) uint8 RGB; target: (15, >=2) the joints the frame should show, canvas px."""
    # 1. Scale: the frame around the target at WORK_TORSO px per torso (a small figure enlarged,
    #    its peaks interpolated), with room for every search.
    out = np.full((15, 3), np.nan)
    target = np.asarray(target, np.float64)[:, :2]
    torso = _length(target)
    if not (np.isfinite(torso) and torso > 1.0 and texture.torso > 1.0):
        return out
    s = WORK_TORSO / torso
    reach = max(2, int(round(SEARCH * WORK_TORSO)))
    pad = reach + int(round(TORSO_PATCH * WORK_TORSO)) + 1
    height, width = frame.shape[:2]
    x0, y0 = np.clip(np.floor(target.min(axis=0) - pad / s).astype(int), 0, None)
    x1, y1 = np.ceil(target.max(axis=0) + pad / s).astype(int) + 1
    x1, y1 = min(max(x1, x0 + 1), width), min(max(y1, y0 + 1), height)
    if x0 >= width or y0 >= height:
        return out  # the whole figure is off the frame
    grey = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    zoom = WORK_TORSO / texture.torso  # work px per character image px

    for k, part in enumerate(PARTS):
        centre = target[list(part.centre)].mean(axis=0)
        if not texture.measurable[k] or not (0 <= centre[0] < width and 0 <= centre[1] < height):
            continue
        if part.half and _fold(target, part.centre[0]) < FOLD:
            continue
        # 2. The patch, turned as the part's bone turns from the rest pose to the target.
        a, b = part.bone
        turn = _angle(target[b] - target[a]) - _angle(texture.rest[b] - texture.rest[a])
        radius = max(4, int(round(part.radius * WORK_TORSO)))
        patch, weight = _patch(texture, k, zoom, turn if np.isfinite(turn) else 0.0, radius)

        # 3. The search around where the target puts it; of the near-best places, the nearest.
        at = (centre - (x0, y0)) * s + pad  # where the target puts the patch's centre, work px
        cx, cy = np.round(at).astype(int)
        half = radius + reach
        score = _match(padded[cy - half : cy + half + 1, cx - half : cx + half + 1], patch, weight)
        best = float(score.max())
        ys, xs = np.nonzero(score >= best - TIE)
        nearest = np.argmin((xs - reach) ** 2 + (ys - reach) ** 2)
        offset = (_subpixel(score, xs[nearest], ys[nearest]) - reach + (cx, cy) - at) / s
        for j in part.joints:
            out[j] = (*(target[j] + offset), best if best >= MIN_SCORE else 0.0)
    return out


def measurable_parts(grey: np.ndarray, weights: tuple[np.ndarray, ...], rest: np.ndarray) -> tuple[bool, ...]:
    """Per part: whether its patch can be placed on the character's own image: it has texture,
    and nowhere else within its search, further than PCK's 0.1 torso, does it match nearly as well."""
    torso = _length(rest)
    if torso <= 1.0:
        return (False,) * len(PARTS)
    texture = Texture(grey, weights, rest, torso, (True,) * len(PARTS))
    zoom = WORK_TORSO / torso
    small = cv2.resize(grey, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA)
    reach = max(2, int(round(SEARCH * WORK_TORSO)))
    pad = reach + int(round(TORSO_PATCH * WORK_TORSO)) + 1
    padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    far = np.hypot(xx, yy) > 0.1 * WORK_TORSO
    out = []
    for k, part in enumerate(PARTS):
        radius = max(4, int(round(part.radius * WORK_TORSO)))
        patch, weight = _patch(texture, k, zoom, 0.0, radius)
        inside = weight > 0
        if inside.sum() < 2 * radius + 1 or patch[inside].std() < MIN_TEXTURE:
            out.append(False)
            continue
        cx, cy = np.round(rest[list(part.centre)].mean(axis=0) * zoom).astype(int) + pad
        half = radius + reach
        score = _match(padded[cy - half : cy + half + 1, cx - half : cx + half + 1], patch, weight)
        out.append(bool(score[far].max() < AMBIGUOUS))
    return tuple(out)


def _side(mask: np.ndarray, rest: np.ndarray, part: Part) -> np.ndarray:
    """The mask's pixels on the bone's side of the line through the part's centre across the bone."""
    a, b = rest[part.bone[0]], rest[part.bone[1]]
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    ahead = (xx - a[0]) * (b[0] - a[0]) + (yy - a[1]) * (b[1] - a[1]) >= 0
    return mask & ahead.astype(np.uint8)


def _patch(texture: Texture, k: int, zoom: float, turn: float, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Part k's (2r+1)^2 grey patch of the character, scaled by zoom and turned by `turn` radians
    about its centre, and its weight (uint8, 1 on the pixels compared)."""
    c, si = zoom * np.cos(turn), zoom * np.sin(turn)
    linear = np.array([[c, -si], [si, c]])
    shift = np.array([radius, radius]) - linear @ texture.rest[list(PARTS[k].centre)].mean(axis=0)
    warp = np.hstack([linear, shift[:, None]])
    side = 2 * radius + 1
    patch = cv2.warpAffine(texture.grey, warp, (side, side), flags=cv2.INTER_LINEAR, borderValue=0)
    weight = cv2.warpAffine(texture.weights[k], warp, (side, side), flags=cv2.INTER_NEAREST, borderValue=0)
    return patch, weight


def _subpixel(score: np.ndarray, x: int, y: int) -> np.ndarray:
    """(x, y) of a peak of `score` at integer (x, y), to a fraction of a pixel: the top of the
    parabola through it and its neighbours, along each axis (at the border, the integer place)."""
    out = np.array([x, y], np.float64)
    for axis, (row, at) in enumerate(((score[y, :], x), (score[:, x], y))):
        if 0 < at < len(row) - 1:
            left, mid, right = float(row[at - 1]), float(row[at]), float(row[at + 1])
            curve = left - 2 * mid + right
            if curve < 0:
                out[axis] += float(np.clip(0.5 * (left - right) / curve, -0.5, 0.5))
    return out


def _match(window: np.ndarray, patch: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """TM_CCOEFF_NORMED on the weighted pixels; -1 where it is undefined (a flat window)."""
    score = cv2.matchTemplate(window, patch, cv2.TM_CCOEFF_NORMED, mask=weight)
    return np.nan_to_num(score, nan=-1.0, posinf=-1.0, neginf=-1.0)


def _length(joints: np.ndarray) -> float:
    """The torso's length, neck to pelvis."""
    return float(np.linalg.norm(joints[JOINT_INDEX["neck"]] - joints[JOINT_INDEX["pelvis"]]))


def _fold(joints: np.ndarray, j: int) -> float:
    """The angle at joint j between its bone and its child's, degrees (180: straight)."""
    child = PARENTS.index(j)
    u, v = joints[PARENTS[j]] - joints[j], joints[child] - joints[j]
    norm = np.linalg.norm(u) * np.linalg.norm(v)
    return 180.0 if norm < 1e-9 else float(np.degrees(np.arccos(np.clip(u @ v / norm, -1.0, 1.0))))


def _angle(v: np.ndarray) -> float:
    return float(np.arctan2(v[1], v[0])) if np.hypot(v[0], v[1]) > 1e-6 else np.nan
