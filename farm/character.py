"""The character: its image, its mask and its rest skeleton on the rig of `farm.rig`.

Skeleton: proposed from the mask's shape for a drawing (`farm.propose`), detected with mediapipe
on photo-like images (searching views of the image as a person detector would, see
farm.pose.extract.search_image_pose), or read from a skeleton file — the
AnimatedDrawings `char_cfg.yaml` format or our own `farm-skeleton/1` YAML:

    format: farm-skeleton/1
    width: 508          # optional: the image size the points were placed on
    height: 602
    joints:             # all 15 rig joints, image pixels, x right, y down
      pelvis: [264, 397]
      neck: [247, 232]
      ...

Mask: a mask file (white = character) when given; otherwise the first automatic mask that
separates the character: the image's alpha channel (unless it is padding around a rectangular
picture), threshold + flood fill when the image is a drawing on plain paper, mediapipe whole-body
segmentation (on the picture, then on the view the person was found in), selfie segmentation. A
mask that swallows the background or finds nothing is passed over; when none is left the error
names each method tried and why it was rejected, and asks for a mask file.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import yaml

from farm.errors import FarmError
from farm.media.probe import load_image, sha256_file
from farm.propose import propose_skeleton
from farm.rig import ANIMATED_DRAWINGS_NAMES, JOINTS, from_mediapipe
from farm.types import Character

if TYPE_CHECKING:
    from farm.pose.extract import ImagePose

SKELETON_FORMAT = "farm-skeleton/1"
MIN_MASK_SHARE = 0.01
# Holes in a mask smaller than this share of the character's area are filled.
MAX_FILLED_HOLE = 0.005
# A character cut out of its picture touches the border little (feet, or the bottom and part of
# the sides for a half-body); a mask over more of the border than this has taken the background.
MAX_BORDER_SHARE = 0.5
# Paper: the darkest channel along the image edge is at least this bright on average and this even.
PAPER_MIN_LEVEL, PAPER_MAX_SPREAD = 100.0, 30.0
# Alpha whose opaque part fills this much of its bounding box is a picture padded with transparency
# (a photo on a wider canvas), not a cut-out: no person's outline fills a rectangle.
PADDING_FILL = 0.98


@dataclass
class CharacterInfo:
    skeleton_source: str  # "detected" | "skeleton_file" | "proposed"
    mask_method: str  # "mask_file" | "alpha" | "pose_segmentation" | "selfie_segmentation" | "threshold"
    width: int
    height: int
    # The view of the image the skeleton was detected in ("full image", "padded square",
    # "crop 0.5 bottom-centre"); None for a skeleton file.
    detection: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def load_character(
    image_path: str | Path,
    *,
    skeleton_path: str | Path | None = None,
    mask_path: str | Path | None = None,
    max_side: int = 8192,
    sha256: str | None = None,
) -> tuple[Character, CharacterInfo]:
    """sha256: the image file's hash when the caller has it already."""
    rgb, alpha = load_image(image_path, max_side=max_side)
    height, width = rgb.shape[:2]
    found = None
    if skeleton_path is not None:
        joints, source = read_skeleton(skeleton_path, (width, height)), "skeleton_file"
    else:
        joints, source, found = _propose_or_detect(rgb, alpha, mask_path, image_path)
    mask, method = character_mask(
        rgb, alpha, mask_path, photo=found is not None, person_box=found.box if found else None, subject=image_path
    )
    character = Character(image=rgb, mask=mask, joints=joints, source=source, sha256=sha256 or sha256_file(image_path))
    return character, CharacterInfo(source, method, width, height, detection=found.view if found else None)


def _propose_or_detect(rgb: np.ndarray, alpha, mask_path, image_path) -> tuple[np.ndarray, str, ImagePose | None]:
    """A drawing on plain paper gets the skeleton its mask's shape proposes: mediapipe sees bodies
    in drawings that are not there (a candy corn's head on its belly). A shape that is no standing
    humanoid falls back to mediapipe, and anything else is detected, proposed only when mediapipe
    finds nobody; with neither, the proposal's refusal says why. Returns joints, the source, and
    the detection (None when proposed)."""
    drawing = _plain_paper(rgb)
    if not drawing:
        try:
            return _detected(rgb, image_path)
        except FarmError:
            pass
    mask, _ = character_mask(rgb, alpha, mask_path, photo=False, subject=image_path)
    try:
        return propose_skeleton(mask, str(image_path)), "proposed", None
    except FarmError as refused:
        if not drawing:
            raise
        try:
            return _detected(rgb, image_path)
        except FarmError:
            raise refused from None


def _detected(rgb: np.ndarray, image_path) -> tuple[np.ndarray, str, ImagePose]:
    found = detect_skeleton(rgb, image_path)
    return from_mediapipe(found.body[:, [0, 1, 3]]), "detected", found


def detect_skeleton(rgb: np.ndarray, image_path: str | Path) -> ImagePose:
    """The person in a photo-like character image, and the view of the image they were found in."""
    from farm.pose.extract import search_image_pose

    found = search_image_pose(rgb)
    if found is None:
        raise FarmError(
            str(image_path),
            "no person found in the character image, whole, padded square or in crops "
            "(drawings and non-human characters are not detected)",
            "pass --character-skeleton FILE (AnimatedDrawings char_cfg.yaml or farm-skeleton/1 YAML, see README)",
        )
    return found


def read_skeleton(path: str | Path, image_size: tuple[int, int]) -> np.ndarray:
    """Read a skeleton file; returns (15, 3) joints in pixels of an image of `image_size` (w, h)."""
    path = Path(path)
    if not path.is_file():
        raise FarmError(str(path), "skeleton file not found", "check the path given to --character-skeleton")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FarmError(str(path), f"not a YAML skeleton file ({type(exc).__name__})", "see the skeleton formats in README") from None
    if isinstance(doc, dict) and isinstance(doc.get("skeleton"), list):
        points = _animated_drawings_points(doc["skeleton"], path)
    elif isinstance(doc, dict) and doc.get("format") == SKELETON_FORMAT and isinstance(doc.get("joints"), dict):
        points = doc["joints"]
    else:
        raise FarmError(
            str(path),
            "unknown skeleton format",
            f"use an AnimatedDrawings char_cfg.yaml (a `skeleton` list) or `format: {SKELETON_FORMAT}` with `joints`",
        )
    missing = [name for name in JOINTS if name not in points]
    if missing:
        raise FarmError(str(path), f"missing joints {', '.join(missing)}", f"give all of {', '.join(JOINTS)}")
    joints = np.ones((len(JOINTS), 3), np.float32)
    for i, name in enumerate(JOINTS):
        loc = points[name]
        if not (isinstance(loc, (list, tuple)) and len(loc) == 2 and all(isinstance(v, (int, float)) for v in loc)):
            raise FarmError(str(path), f"joint {name} must be [x, y] in pixels, got {loc!r}", "fix that joint")
        joints[i, :2] = loc
    joints[:, :2] *= _size_factor(doc, image_size, path)
    outside = [JOINTS[i] for i, (x, y, _) in enumerate(joints) if not (0 <= x < image_size[0] and 0 <= y < image_size[1])]
    if outside:
        raise FarmError(
            str(path),
            f"joints {', '.join(outside)} lie outside the {image_size[0]}x{image_size[1]} image",
            "place every joint on the character image (pixels, origin top-left)",
        )
    return joints


def _animated_drawings_points(skeleton: list, path: Path) -> dict[str, list]:
    points = {}
    for entry in skeleton:
        if not isinstance(entry, dict) or "name" not in entry or "loc" not in entry:
            raise FarmError(str(path), f"skeleton entry {entry!r} needs `name` and `loc`", "fix the entry")
        if entry["name"] in ANIMATED_DRAWINGS_NAMES:
            points[ANIMATED_DRAWINGS_NAMES[entry["name"]]] = entry["loc"]
    return points


def _size_factor(doc: dict, image_size: tuple[int, int], path: Path) -> float:
    """Skeleton files may have been placed on a resized copy of the image; same aspect is fine."""
    width, height = doc.get("width"), doc.get("height")
    if width is None and height is None:
        return 1.0
    if not all(isinstance(v, (int, float)) and v > 0 for v in (width, height)):
        raise FarmError(str(path), f"width and height must be positive numbers, got {width!r} and {height!r}", "fix them or leave both out")
    if abs(width / height - image_size[0] / image_size[1]) > 0.01:
        raise FarmError(
            str(path),
            f"skeleton was placed on a {width}x{height} image but the character image is {image_size[0]}x{image_size[1]}",
            "use the skeleton made for this image",
        )
    return image_size[0] / width


def character_mask(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    mask_path,
    *,
    photo: bool,
    person_box: tuple[int, int, int, int] | None = None,
    subject: str | Path = "character image",
) -> tuple[np.ndarray, str]:
    """photo: mediapipe found a person in the image, so its segmentation is the best guess;
    person_box: the view (x, y, w, h) it was found in. subject: the image, for errors."""
    if mask_path is not None:
        mask = _mask_file(mask_path, rgb.shape[:2])
        if mask.mean() < MIN_MASK_SHARE:
            raise FarmError(
                str(mask_path),
                f"the character mask (mask_file) covers only {100 * mask.mean():.2f}% of the image",
                "pass --character-mask FILE (white on the character, black elsewhere)",
            )
        return mask, "mask_file"
    picture = _picture_box(rgb, alpha)
    rejected, small = [], False
    for method, mask in _automatic_masks(rgb, alpha, photo, person_box, picture):
        problem = mask if isinstance(mask, str) else _mask_problem(mask, picture)
        if problem is None:
            return mask, method
        rejected.append(f"{method}: {problem}")
        small |= problem.startswith("covers only")
    crop = ", or crop the image closer around the character" if small else ""
    raise FarmError(
        str(subject),
        f"could not separate the character from the background (tried {'; '.join(rejected)})",
        f"pass --character-mask FILE (white on the character, black elsewhere){crop}",
    )


def _mask_file(mask_path, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    mask_rgb, _ = load_image(mask_path)
    if mask_rgb.shape[:2] != (height, width):
        if abs(mask_rgb.shape[1] / mask_rgb.shape[0] - width / height) > 0.01:
            raise FarmError(
                str(mask_path),
                f"mask is {mask_rgb.shape[1]}x{mask_rgb.shape[0]} but the character image is {width}x{height}",
                "give the mask made for this image",
            )
        mask_rgb = cv2.resize(mask_rgb, (width, height), interpolation=cv2.INTER_NEAREST)
    return mask_rgb.max(axis=2) > 127


def _automatic_masks(rgb, alpha, photo: bool, person_box, picture) -> Iterator[tuple[str, np.ndarray | str]]:
    """(method, mask) in order of trust, each made only when the ones before were rejected; a
    string instead of a mask says why that method could not make one."""
    # 1. The alpha channel, when it cuts the character out (padding around a picture does not)
    if alpha is not None:
        opaque = alpha > 127
        fill = _box_fill(opaque)
        if fill >= PADDING_FILL:
            yield "alpha", f"it is padding, not a cut-out (the opaque part fills {100 * fill:.0f}% of a rectangle)"
        else:
            yield "alpha", _clean(opaque)
    # 2. A drawing on plain paper is cut out by its outline
    if not photo and _plain_paper(rgb):
        yield "threshold", _clean(_paper_mask(rgb))
    # 3. mediapipe's person segmentation: on the picture, then on the view the person was found in
    # (a stylized figure mediapipe finds only padded or cropped is also segmented only there)
    views = [("the picture", picture)]
    if person_box is not None and person_box != picture:
        views.append(("the view the person was found in", person_box))
    for where, box in views:
        body = _body_mask(_view(rgb, box))
        yield "pose_segmentation", f"found no person in {where}" if body is None else _clean(_in_box(body, box, rgb.shape[:2]))
    yield "selfie_segmentation", _clean(_in_box(_selfie_mask(_view(rgb, picture)), picture, rgb.shape[:2]))


def _picture_box(rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the picture: the whole image, or the opaque rectangle when the alpha channel
    only pads a picture with transparency (a photo on a wider canvas)."""
    whole = (0, 0, rgb.shape[1], rgb.shape[0])
    if alpha is None:
        return whole
    opaque = alpha > 127
    if _box_fill(opaque) < PADDING_FILL:
        return whole
    return cv2.boundingRect(opaque.astype(np.uint8))


def _box_fill(mask: np.ndarray) -> float:
    """Share of the mask's bounding box that the mask covers."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return float(mask.sum()) / max(w * h, 1)


def _view(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    from farm.pose.extract import view_image

    return view_image(rgb, box)


def _in_box(view_mask: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """A mask of the view `box` (which may reach past the image) placed on an image of `shape`."""
    x, y, w, h = box
    height, width = shape
    mask = np.zeros(shape, bool)
    top, left, bottom, right = max(y, 0), max(x, 0), min(y + h, height), min(x + w, width)
    mask[top:bottom, left:right] = view_mask[top - y:bottom - y, left - x:right - x]
    return mask


def _mask_problem(mask: np.ndarray, picture: tuple[int, int, int, int]) -> str | None:
    """Why an automatic mask does not separate the character, or None when it does. A character
    cut out of its picture touches the picture's edge little (feet, or the bottom and part of the
    sides for a half-body)."""
    if mask.mean() < MIN_MASK_SHARE:
        return f"covers only {100 * mask.mean():.2f}% of the image"
    x, y, w, h = picture
    border = _border_share(mask[y:y + h, x:x + w])
    if border > MAX_BORDER_SHARE:
        return f"covers {100 * border:.0f}% of the picture's border, so it has taken the background"
    return None


def _plain_paper(rgb: np.ndarray, band: int = 5) -> bool:
    """The picture's edge is light and even, as the paper around a drawing is (not a sky, a room or
    a dark backdrop, where stroke thresholding would cut out the background instead)."""
    gray = rgb.min(axis=2).astype(np.float32)
    edge = np.concatenate([gray[:band].ravel(), gray[-band:].ravel(), gray[:, :band].ravel(), gray[:, -band:].ravel()])
    return float(edge.mean()) >= PAPER_MIN_LEVEL and float(edge.std()) <= PAPER_MAX_SPREAD


def _border_share(mask: np.ndarray) -> float:
    """Share of the image's border pixels that the mask covers."""
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    return float(border.mean())


def _body_mask(rgb: np.ndarray) -> np.ndarray | None:
    """mediapipe Pose's whole-body segmentation: it keeps the feet, which the selfie model
    (trained on upper bodies) tends to lose. None when Pose finds no person."""
    import mediapipe as mp

    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True) as pose:
        found = pose.process(rgb).segmentation_mask
    return None if found is None else found > 0.5


def _selfie_mask(rgb: np.ndarray) -> np.ndarray:
    import mediapipe as mp

    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        prob = seg.process(rgb).segmentation_mask
    return prob > 0.5


def _paper_mask(rgb: np.ndarray) -> np.ndarray:
    """A drawing on plain paper: dark strokes, filled in from the outline (AnimatedDrawings' approach)."""
    gray = rgb.min(axis=2)
    block = max(3, (min(gray.shape) // 5) | 1)
    strokes = cv2.bitwise_not(cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, 8))
    kernel = np.ones((3, 3), np.uint8)
    strokes = cv2.dilate(cv2.morphologyEx(strokes, cv2.MORPH_CLOSE, kernel, iterations=2), kernel, iterations=2)
    # Flood the paper from the border; whatever the flood cannot reach is inside the outline.
    h, w = strokes.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    flood[1:-1, 1:-1] = strokes > 0
    paper = np.zeros((h, w), np.uint8)
    border = [(0, x) for x in range(0, w, 10)] + [(h - 1, x) for x in range(0, w, 10)]
    border += [(y, 0) for y in range(0, h, 10)] + [(y, w - 1) for y in range(0, h, 10)]
    for y, x in border:
        if not flood[y + 1, x + 1]:
            cv2.floodFill(paper, flood, (x, y), 255, flags=4 | (255 << 8) | cv2.FLOODFILL_MASK_ONLY)
    reached = flood[1:-1, 1:-1] == 255
    return ~reached


def _clean(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected part and fill its small holes (segmentation speckle). Large
    holes stay: they are background seen between an arm and the body, and filling them would glue
    the arm to the torso."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    part = labels == largest
    holes, hole_labels, hole_stats, _ = cv2.connectedComponentsWithStats((~part).astype(np.uint8), connectivity=4)
    small = np.flatnonzero(hole_stats[:, cv2.CC_STAT_AREA] < MAX_FILLED_HOLE * part.sum())
    touching_border = np.unique(np.concatenate([hole_labels[0], hole_labels[-1], hole_labels[:, 0], hole_labels[:, -1]]))
    small = np.setdiff1d(small, touching_border)
    return part | np.isin(hole_labels, small)
