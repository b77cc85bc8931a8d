"""A rest skeleton proposed from the shape of a drawing's mask, for drawings without a skeleton file.

No learned weights: the proposal reads the silhouette's geometry only, for a humanoid standing
roughly upright (head up, two arms, two legs down).

1. The body's centre is the mask's deepest point (farthest from its outline); the torso is the
   thick part around it, what an opening with a disk of 3/4 of that depth keeps.
2. The five extremities (head, two hands, two feet) are the tips of the branches that stick out of
   the body farthest, found one at a time: the point farthest (inside the mask) from what was found
   so far, less how deep inside the shape that found point lies; its centre line is then found too.
3. Each limb follows the mask's centre line (a shortest path that prefers pixels far from the
   outline) from its tip to the body's centre; the shoulder or hip is where that line enters the
   torso, the wrist or ankle the inner end of the hand's or foot's thickest stretch, the elbow or
   knee half way between.
4. The neck is between the shoulders, the pelvis between the hips, the head half way from the
   neck to the top of the head.

A shape that is not arranged as a standing humanoid (fewer or more than five extremities, limbs
that would be hands reaching the ground like legs, a head not above the body or feet not below it)
is refused rather than given a skeleton that would animate nonsense.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from farm.errors import FarmError
from farm.rig import BONES, JOINT_INDEX, JOINTS

# The mask's longer side while proposing: enough for joints within a percent of the height.
WORK_SIDE = 200
# A branch that sticks out of the body less than this share of the character's height is a bump
# of the outline (a finger, a spike of a crown), not a limb; a sixth that sticks out more is one
# limb too many for a humanoid.
MIN_BRANCH = 0.12
# The torso is what an opening with a disk of this share of the deepest inscribed radius keeps.
TORSO_OPENING = 0.75
# Hands that come this close (share of the height) to the feet's level are legs: a quadruped.
HAND_ABOVE_FEET = 0.12
# The hand or foot is the thickest stretch of this last share of the limb; the wrist or ankle is
# its inner end (the last point within HAND_WIDTH of its thickest).
END_PART = 0.4
HAND_WIDTH = 0.9

FIX = "pass --character-skeleton FILE (a farm-skeleton/1 YAML, see README, or an AnimatedDrawings char_cfg.yaml)"


def propose_skeleton(mask: np.ndarray, subject: str = "character") -> np.ndarray:
    """The 15 rig joints (15, 3: x, y, confidence 1) in pixels of `mask` (H, W bool, True = character)."""
    # 1. The character alone, on a small copy with a margin of background; the torso and the body's centre.
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        raise FarmError(subject, "the character mask is empty", "pass a mask that is white on the character")
    y0, x0 = rows.min(), cols.min()
    crop = mask[y0 : rows.max() + 1, x0 : cols.max() + 1].astype(np.uint8)
    scale = WORK_SIDE / max(crop.shape)
    small = np.pad(_largest_part(cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) > 0), 1)
    depth = cv2.distanceTransform(small.astype(np.uint8), cv2.DIST_L2, 5)
    rows = np.flatnonzero(small.any(axis=1))
    height = float(rows[-1] - rows[0] + 1)
    centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
    torso = _torso(small, depth, centre)
    graph = _Graph(small, depth, centre)
    # 2. Extremities, the farthest out first; a sixth is one too many.
    tips = graph.extremities(MIN_BRANCH * height, count=6)
    head, hands, feet = _arrange(tips, graph, centre, height, subject)
    # 3. Limbs along the centre line.
    joints = np.ones((len(JOINTS), 3), np.float32)
    limbs = {"wrist": hands, "ankle": feet}
    for end, pair in limbs.items():
        root, mid = ("shoulder", "elbow") if end == "wrist" else ("hip", "knee")
        for side, tip in pair.items():
            line = graph.centre_path(tip)
            base, middle, last = _limb(line, torso, depth)
            joints[JOINT_INDEX[f"{side}_{root}"], :2] = base
            joints[JOINT_INDEX[f"{side}_{mid}"], :2] = middle
            joints[JOINT_INDEX[f"{side}_{end}"], :2] = last
    # 4. The body's axis.
    neck = (joints[JOINT_INDEX["right_shoulder"], :2] + joints[JOINT_INDEX["left_shoulder"], :2]) / 2
    joints[JOINT_INDEX["neck"], :2] = neck
    joints[JOINT_INDEX["pelvis"], :2] = (joints[JOINT_INDEX["right_hip"], :2] + joints[JOINT_INDEX["left_hip"], :2]) / 2
    top = np.array(graph.pixel(head)[::-1], np.float32)
    joints[JOINT_INDEX["head"], :2] = (neck + top) / 2
    # Pixel centres back to the full-size image.
    joints[:, :2] = (joints[:, :2] - 1 + 0.5) / scale - 0.5 + np.array([x0, y0], np.float32)
    return joints


def _largest_part(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected part (a speck cut off by the downscaling is no limb)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _torso(mask: np.ndarray, depth: np.ndarray, centre: tuple[int, int]) -> np.ndarray:
    radius = max(1, int(TORSO_OPENING * depth.max()))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, disk) > 0
    # The part that holds the centre; a head that survives the opening is not torso.
    _, labels = cv2.connectedComponents(opened.astype(np.uint8), connectivity=8)
    return labels == labels[centre]


class _Graph:
    """The mask's pixels, 8-connected: geodesic lengths, and centre-line paths."""

    def __init__(self, mask: np.ndarray, depth: np.ndarray, start: tuple[int, int]) -> None:
        index = -np.ones(mask.shape, np.int64)
        self.pixels = np.argwhere(mask)
        index[mask] = np.arange(len(self.pixels))
        src, dst, step = [], [], []
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            a = index[: mask.shape[0] - dy, max(0, -dx) : mask.shape[1] - max(0, dx)]
            b = index[dy:, max(0, dx) : mask.shape[1] + min(0, dx)]
            both = (a >= 0) & (b >= 0)
            src.append(a[both])
            dst.append(b[both])
            step.append(np.full(both.sum(), np.hypot(dy, dx)))
        src, dst, step = np.concatenate(src), np.concatenate(dst), np.concatenate(step)
        n = len(self.pixels)
        # Both directions, and room for one extra node (see extremities).
        both = (np.concatenate([src, dst]), np.concatenate([dst, src]))
        self.length_with_root = coo_matrix((np.concatenate([step, step]), both), shape=(n + 1, n + 1)).tocsr()
        self.depth = depth[mask]
        # Centre line: a step costs more the nearer it runs to the outline.
        weight = step / np.minimum(self.depth[src], self.depth[dst]) ** 2
        medial = coo_matrix((weight, (src, dst)), shape=(n, n)).tocsr()
        self.start = int(index[start])
        self.towards_start = dijkstra(medial, directed=False, indices=self.start, return_predecessors=True)[1]

    def pixel(self, node: int) -> tuple[int, int]:
        return tuple(int(v) for v in self.pixels[node])

    def extremities(self, min_length: float, count: int) -> list[int]:
        """Tips of up to `count` branches that stick out at least `min_length`, longest first.

        A point sticks out of what was found by its geodesic distance to a found point less that
        point's depth inside the shape, at the least: so a round blob has no branches however large
        it is, and an arm's length does not count the torso's. The least over all found points is
        one shortest-path run from an extra node tied to each found point by (deepest - its depth)."""
        n, deepest = len(self.pixels), float(self.depth.max()) + 1  # +1: no tie of weight 0 (no edge)
        found, on_tree = [self.start], {self.start}
        tips, lengths = [], []
        while len(tips) < count:
            ties = coo_matrix((deepest - self.depth[found], (np.full(len(found), n), found)), shape=(n + 1, n + 1))
            dist = dijkstra((self.length_with_root + ties).tocsr(), directed=True, indices=n)[:n]
            reach = np.where(np.isfinite(dist), dist - deepest, -1)
            tip = int(np.argmax(reach))
            if reach[tip] < min_length:
                break
            tips.append(tip)
            lengths.append(float(reach[tip]))
            # The branch's centre line joins what was found (the lines all lead to the start).
            for node in self.centre_line(tip):
                if node in on_tree:
                    break
                found.append(node)
                on_tree.add(node)
        return [tips[i] for i in np.argsort(lengths)[::-1]]

    def centre_line(self, tip: int) -> list[int]:
        """The nodes from `tip` to the start along the mask's centre line."""
        nodes = [tip]
        while self.towards_start[nodes[-1]] >= 0:
            nodes.append(int(self.towards_start[nodes[-1]]))
        return nodes

    def centre_path(self, tip: int) -> np.ndarray:
        """(N, 2) x, y from `tip` to the start along the mask's centre line."""
        return self.pixels[self.centre_line(tip)][:, ::-1].astype(np.float32)


def _arrange(tips: list[int], graph: _Graph, centre: tuple[int, int], height: float, subject: str):
    """Name the extremities: head (top), feet (the two lowest), hands (the other two)."""
    if len(tips) < 5:
        raise FarmError(
            subject,
            f"the drawing's shape has {len(tips)} limb-like extremities, not the five (head, two hands, two feet) "
            "of a standing humanoid, so no skeleton is proposed",
            FIX,
        )
    if len(tips) > 5:
        raise FarmError(
            subject,
            "the drawing's shape has more than five limb-like extremities (a head, two hands and two feet "
            "are expected of a standing humanoid; an animal or a many-limbed figure is not proposed)",
            FIX,
        )
    xy = np.array([graph.pixel(t)[::-1] for t in tips], np.float32)
    order = np.argsort(xy[:, 1])
    head, hand_a, hand_b, foot_a, foot_b = (tips[i] for i in order)
    hands_y = max(xy[order[1], 1], xy[order[2], 1])
    feet_y = min(xy[order[3], 1], xy[order[4], 1])
    if feet_y - hands_y < HAND_ABOVE_FEET * height:
        raise FarmError(
            subject,
            "four of the drawing's extremities reach the ground like legs (a quadruped?), not two feet below "
            "two hands as on a standing humanoid, so no skeleton is proposed",
            FIX,
        )
    if feet_y <= centre[0] or xy[order[0], 1] >= centre[0]:
        raise FarmError(
            subject,
            "the drawing does not stand upright (head above the body, feet below it), so no skeleton is proposed",
            FIX,
        )
    return head, _sides(hand_a, hand_b, graph), _sides(foot_a, foot_b, graph)


def _sides(a: int, b: int, graph: _Graph) -> dict[str, int]:
    """The person's right side is on the image's left (a drawing faces the viewer)."""
    if graph.pixel(a)[1] > graph.pixel(b)[1]:
        a, b = b, a
    return {"right": a, "left": b}


def _limb(line: np.ndarray, torso: np.ndarray, depth: np.ndarray):
    """Root (shoulder/hip), middle (elbow/knee) and end (wrist/ankle) on a limb's centre line from its tip."""
    ij = line[:, ::-1].astype(int)
    inside = torso[ij[:, 0], ij[:, 1]]
    enter = int(np.argmax(inside)) if inside.any() else len(line) - 1
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))])
    limb_length = along[enter]
    end_part = along <= END_PART * limb_length
    thick = depth[ij[:, 0], ij[:, 1]]
    hand = np.where(end_part, thick, -1)
    end = int(np.flatnonzero(hand >= HAND_WIDTH * hand.max())[-1])
    middle = int(np.argmin(np.abs(along - (along[end] + along[enter]) / 2)))
    return line[enter], line[middle], line[end]


def draw_skeleton(rgb: np.ndarray, mask: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """The image with the mask's outline, the rig's bones and each joint's name, to check a skeleton by eye.

    The person's right side is drawn red, the left blue, the spine green (RGB)."""
    canvas = rgb.copy()
    width = max(2, round(max(rgb.shape[:2]) / 300))
    outline, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, outline, -1, (255, 200, 0), width)
    colour = {"right": (220, 30, 30), "left": (30, 60, 230)}
    point = {name: (round(float(x)), round(float(y))) for name, (x, y) in zip(JOINTS, joints[:, :2])}
    for parent, child in BONES:
        side = JOINTS[child].split("_")[0]
        cv2.line(canvas, point[JOINTS[parent]], point[JOINTS[child]], colour.get(side, (20, 160, 40)), width, cv2.LINE_AA)
    scale = max(0.35, max(rgb.shape[:2]) / 1500)
    for name, (x, y) in point.items():
        cv2.circle(canvas, (x, y), 2 * width, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(canvas, (x, y), 2 * width, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, name, (x + 3 * width, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(1, width // 2), cv2.LINE_AA)
    return canvas
