"""Which person of a motion video is the performer, and following that one person (`motion.subject`).

mediapipe's bundled models find one person per image. Every person on a frame is found by asking
again with the people already found painted out; the performer is chosen among those on the first
frame (`largest`, `left`, `right`, `centre`, or an index counted from the left) and then followed:
each person found so far is looked for in a crop around where it last was, and a detection counts
as that person only when it lies within a torso length or so of its last place and no nearer
person claims it. A person that is not found (hidden in a hug, behind a passer-by) keeps its last
place for up to GAP_SECONDS and is looked for there, so the pose continues when it shows again
rather than jumping to whoever is most prominent.

It costs about one static mediapipe pass per person and frame, plus one to look for newcomers:
on the 2-core box, two people at 1080x1920 take ≈0.25 s a frame with plain Pose and ≈0.75 s with
Holistic (hands and face), against ≈0.02 s for mediapipe's own tracking of one person.

Coordinates are pixels of the frame, as in farm.pose.extract.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from farm.errors import FarmError
from farm.rig import VISIBLE

RULES = ("largest", "left", "right", "centre")
MAX_PEOPLE = 4  # people looked for on a frame
GAP_SECONDS = 2.0  # how long a person that is not found is still looked for at its last place
# A detection is that person when its neck is within this many torso lengths of the person's last
# neck, plus STEP_GROWTH more per frame the person was not found.
MAX_STEP = 1.0
STEP_GROWTH = 0.5
MAX_GROWTH_FRAMES = 2  # the reach stops growing after this many frames (2 torso lengths in all)
SAME_PERSON = 0.25  # two detections whose necks are closer than this many torso lengths are one person
# The crop a person is looked for in: its last box grown by these shares of its width and height.
CROP_GROW = (0.25, 0.15)
# A found person is painted out with its box grown by this share of its size on every side.
PAINT_GROW = 0.1

_SHOULDERS, _HIPS = [11, 12], [23, 24]

# One detection on an image: mediapipe's arrays (body (33, 4), then any others such as hands and
# face, (N, 3)), in the image's pixels; None when nobody is found.
Detect = Callable[[np.ndarray], "tuple[np.ndarray, ...] | None"]


def parse_subject(value: str | int | None, where: str = "config motion.subject") -> str | int | None:
    """The rule a `motion.subject` value names: one of RULES, an index >= 0, or None (the most
    prominent person, mediapipe's own tracking)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in RULES:
        return text
    if text.isdigit():
        return int(text)
    raise FarmError(where, f"{value!r} is not a way to pick the performer",
                    f"use one of {', '.join(RULES)}, or an index counted from the left at the first frame (0, 1, ...)")


@dataclass(eq=False)  # a person is itself, not anyone with equal arrays
class _Person:
    body: np.ndarray  # (33, 4) last detection
    box: np.ndarray  # (4,) x0, y0, x1, y1 of its seen landmarks
    missed: int = 0  # frames since it was last found


def follow_subject(
    frames: Iterable[np.ndarray],
    detect: Detect,
    rule: str | int,
    fps: float,
    *,
    source: str = "motion video",
    record: dict | None = None,
) -> Iterator[tuple[np.ndarray, ...] | None]:
    """The chosen person's detection on each frame (None where it is not found).

    frames: RGB (H, W, 3) uint8 images in order. rule: from parse_subject. record: filled with
    the choice for the manifest: people (how many the first frame with people shows), index
    (the one picked, counted from the left), box (its landmarks' box there), found (frames it was
    found on).
    """
    record = record if record is not None else {}
    gap = max(1, int(round(GAP_SECONDS * fps)))
    people: list[_Person] = []
    chosen: _Person | None = None
    found = 0
    for rgb in frames:
        # 1. Before the choice: everyone on the frame, and the pick among them.
        if chosen is None:
            everyone = _find_all(rgb, detect, [])
            if not everyone:
                yield None
                continue
            people = [_Person(parts[0], _box(parts[0])) for parts in everyone]
            index = _pick(people, rule, rgb.shape, source)
            chosen = people[index]
            from_left = int(np.argsort([_neck(p.body)[0] for p in people], kind="stable").tolist().index(index))
            record.update(people=len(people), index=from_left, box=[round(float(v), 1) for v in chosen.box])
            found += 1
            yield everyone[index]
            continue
        # 2. Each known person in a crop around its last place; of two claiming one detection, the
        #    one that was nearer to it keeps it.
        parts_of = _follow_known(rgb, detect, people)
        # 3. Everyone else on the frame: a known person its crop missed (another one was more
        #    prominent there), or someone new (kept, so as not to be taken for the performer later).
        painted = [p.box for p, parts in zip(people, parts_of) if parts is not None]
        for parts in _find_all(rgb, detect, painted, limit=MAX_PEOPLE - len(painted)):
            missed = [i for i, got in enumerate(parts_of) if got is None and _within_reach(parts[0], people[i])]
            if missed:
                nearest = min(missed, key=lambda i: np.linalg.norm(_neck(parts[0]) - _neck(people[i].body)))
                parts_of[nearest] = parts
            elif len(people) < MAX_PEOPLE:
                people.append(_Person(parts[0], _box(parts[0])))
                parts_of.append(parts)
        # 4. Update the people; forget those not found for too long (the performer too: once gone,
        #    it is not found again, rather than replaced by whoever comes along).
        for person, parts in zip(people, parts_of):
            if parts is None:
                person.missed += 1
            else:
                person.body, person.box, person.missed = parts[0], _box(parts[0]), 0
        result = parts_of[people.index(chosen)] if chosen in people else None
        people = [p for p in people if p.missed <= gap]
        found += result is not None
        yield result
    record["found"] = found


def _find_all(rgb: np.ndarray, detect: Detect, painted: list[np.ndarray], limit: int = MAX_PEOPLE) -> list[tuple]:
    """Everyone on the frame outside `painted` boxes: detect, paint the person out, detect again."""
    image = rgb.copy()
    for box in painted:
        _paint(image, box)
    out: list[tuple] = []
    while len(out) < limit:
        parts = detect(image)
        if parts is None or not _is_person(parts[0]):
            break
        if _inside_any(_neck(parts[0]), painted):
            break  # the detector reads a person into a painted-out area: nobody is left
        out.append(parts)
        painted = [*painted, _box(parts[0])]
        _paint(image, painted[-1])
    return out


def _follow_known(rgb: np.ndarray, detect: Detect, people: list[_Person]) -> list[tuple | None]:
    """Each person looked for in a crop around its last box; a detection another person is nearer
    to is that other person's (two people crossing), so each detection goes to at most one."""
    height, width = rgb.shape[:2]
    claims: list[tuple | None] = []
    for k, person in enumerate(people):
        x0, y0, x1, y1 = _crop(person, width, height)
        if x1 - x0 < 8 or y1 - y0 < 8:
            claims.append(None)
            continue
        parts = _detect_in(rgb[y0:y1, x0:x1], detect, x0, y0)
        if parts is None or not _within_reach(parts[0], person) or _nearer_to_other(parts[0], k, people):
            # Someone else is more prominent in the crop (a hug, a crossing): again with the others
            # painted out where they last were, outside this person's own last box.
            others = rgb.copy()
            for other in people:
                if other is not person:
                    _paint(others, other.box)
            bx0, by0, bx1, by1 = (int(v) for v in np.clip(person.box, 0, [width, height, width, height]))
            others[by0:by1, bx0:bx1] = rgb[by0:by1, bx0:bx1]
            parts = _detect_in(others[y0:y1, x0:x1], detect, x0, y0)
        claims.append(parts if parts is not None and _within_reach(parts[0], person) else None)
    # A detection claimed by several people goes to the one whose last neck is nearest.
    out: list[tuple | None] = list(claims)
    for i, a in enumerate(claims):
        for j, b in enumerate(claims):
            if i < j and a is not None and b is not None and _same_person(a[0], b[0]):
                d_i = np.linalg.norm(_neck(a[0]) - _neck(people[i].body))
                d_j = np.linalg.norm(_neck(b[0]) - _neck(people[j].body))
                out[j if d_i <= d_j else i] = None
    return out


def _detect_in(crop: np.ndarray, detect: Detect, x0: int, y0: int) -> tuple | None:
    parts = detect(np.ascontiguousarray(crop))
    if parts is None or not _is_person(parts[0]):
        return None
    return tuple(_shifted(p, x0, y0) for p in parts)


def _nearer_to_other(body: np.ndarray, k: int, people: list[_Person]) -> bool:
    distances = [np.linalg.norm(_neck(body) - _neck(p.body)) for p in people]
    return int(np.argmin(distances)) != k


def _within_reach(body: np.ndarray, person: _Person) -> bool:
    """Whether a detection is near enough to where the person last was to be that person."""
    reach = (MAX_STEP + STEP_GROWTH * min(person.missed, MAX_GROWTH_FRAMES)) * _torso_length(person.body)
    return bool(np.linalg.norm(_neck(body) - _neck(person.body)) <= reach)


def _pick(people: list[_Person], rule: str | int, shape: tuple[int, ...], source: str) -> int:
    necks = np.array([_neck(p.body) for p in people])
    if isinstance(rule, int):
        if rule >= len(people):
            raise FarmError(source, f"motion.subject={rule} but the first frame with people shows {len(people)}",
                            f"use an index from 0 to {len(people) - 1} (counted from the left), or left/right/largest/centre")
        return int(np.argsort(necks[:, 0], kind="stable")[rule])
    if rule == "left":
        return int(np.argmin(necks[:, 0]))
    if rule == "right":
        return int(np.argmax(necks[:, 0]))
    if rule == "centre":
        centre = np.array([shape[1] / 2.0, shape[0] / 2.0])
        return int(np.argmin(np.linalg.norm(necks - centre, axis=1)))
    areas = [float(np.prod(p.box[2:] - p.box[:2])) for p in people]
    return int(np.argmax(areas))


def _is_person(body: np.ndarray) -> bool:
    return bool((body[_SHOULDERS, 3] >= VISIBLE).any())


def _neck(body: np.ndarray) -> np.ndarray:
    return body[_SHOULDERS, :2].mean(axis=0)


def _torso_length(body: np.ndarray) -> float:
    """Shoulders' midpoint to hips' midpoint (mediapipe's estimate, also for hips out of view), and
    never less than the shoulder width (a person facing sideways)."""
    torso = np.linalg.norm(_neck(body) - body[_HIPS, :2].mean(axis=0))
    shoulders = np.linalg.norm(body[11, :2] - body[12, :2])
    return float(max(torso, shoulders, 1.0))


def _box(body: np.ndarray) -> np.ndarray:
    seen = body[:, 3] >= VISIBLE
    points = body[seen, :2] if seen.sum() >= 2 else body[:, :2]
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float64)


def _crop(person: _Person, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = person.box
    grow_x, grow_y = CROP_GROW[0] * (x1 - x0), CROP_GROW[1] * (y1 - y0)
    reach = STEP_GROWTH * min(person.missed, MAX_GROWTH_FRAMES) * _torso_length(person.body)  # it may have moved while hidden
    return (int(max(0, x0 - grow_x - reach)), int(max(0, y0 - grow_y - reach)),
            int(min(width, x1 + grow_x + reach)), int(min(height, y1 + grow_y + reach)))


def _paint(image: np.ndarray, box: np.ndarray) -> None:
    x0, y0, x1, y1 = box
    gx, gy = PAINT_GROW * (x1 - x0), PAINT_GROW * (y1 - y0)
    h, w = image.shape[:2]
    image[int(max(0, y0 - gy)) : int(min(h, y1 + gy)), int(max(0, x0 - gx)) : int(min(w, x1 + gx))] = 127


def _inside_any(point: np.ndarray, boxes: list[np.ndarray]) -> bool:
    return any(b[0] <= point[0] <= b[2] and b[1] <= point[1] <= b[3] for b in boxes)


def _same_person(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.linalg.norm(_neck(a) - _neck(b)) < SAME_PERSON * min(_torso_length(a), _torso_length(b)))


def _shifted(part: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """A crop's landmarks in frame pixels (points not found stay all zeros)."""
    out = part.copy()
    found = part[:, -1] > 0 if part.shape[1] == 3 else np.ones(len(part), bool)
    out[found, 0] += x0
    out[found, 1] += y0
    return out
