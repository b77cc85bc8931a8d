"""Binding mesh vertices to the bones of the rig, per-bone affine maps, linear blend skinning.

Bone b (0..13) is BONES[b] = (PARENTS[k], k) with k = b + 1; it is named by its child joint k.
Rest positions are character-image pixels; posed positions are canvas pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from farm.rig import ARM_JOINTS, BONES, JOINTS, LEG_JOINTS

# Draw layers: 0 is the torso with the head; 1..4 are the limbs in the order WindowRequest.layers
# indexes them.
LIMBS: tuple[str, ...] = ("right_arm", "left_arm", "right_leg", "left_leg")
LAYERS: tuple[str, ...] = ("torso",) + LIMBS
_PART_JOINTS = ((0, 1, 2), ARM_JOINTS["right"], ARM_JOINTS["left"], LEG_JOINTS["right"], LEG_JOINTS["left"])
# The layer of each bone: the part holding both of its joints. The four connector bones (neck to
# shoulder, pelvis to hip) lie inside the torso and get no area: the torso bone (pelvis to neck)
# drives the whole torso, so the body does not shear along the shoulder line or the hip line when
# the shoulders or hips tilt. Connectors still carry their child joints (-1 here).
BONE_LAYER = np.array([next((i for i, part in enumerate(_PART_JOINTS) if parent in part and child in part), -1)
                       for parent, child in BONES])
BOUND_BONES = np.flatnonzero(BONE_LAYER >= 0)
# The part each joint belongs to (the pelvis, neck and head to the torso).
JOINT_LAYER = np.array([next(i for i, part in enumerate(_PART_JOINTS) if j in part) for j in range(len(JOINTS))])
# A torso is a plate, not a stick: the torso bone's distances are measured from the hull of these
# joints, so chest and belly next to a shoulder or hip joint stay on the torso instead of following
# the upper arm or thigh that starts there.
TORSO_BONE = 0
TORSO_PLATE = tuple(JOINTS.index(name) for name in
                    ("pelvis", "neck", "right_shoulder", "left_shoulder", "right_hip", "left_hip"))

BONE_PARENT = np.array([parent for parent, _ in BONES])
BONE_CHILD = np.array([child for _, child in BONES])
# The bone whose transform carries each joint: the bone it ends, the torso bone for the pelvis.
JOINT_BONE = np.array([0] + [k - 1 for k in range(1, len(JOINTS))])
# The bone each bone hangs from (-1 for the torso bone). Parents come before children, so one
# forward pass over the bones sees every parent first.
PARENT_BONE = np.concatenate([[-1], JOINT_BONE[BONE_PARENT[1:]]])

# Hands and feet lie past the last joint of the rig: the forearm and shin reach on by this share
# of their length when distances are measured, so a hand resting on a hip follows the arm.
REACH_PAST_END = {JOINTS.index(name) - 1: share for name, share in
                  (("right_wrist", 0.3), ("left_wrist", 0.3), ("right_ankle", 0.3), ("left_ankle", 0.3))}

# Geodesic distances are computed on a grid with this many cells across the longer image side.
GEODESIC_CELLS = 160
# Weight falloff: w ∝ (d + eps)^-WEIGHT_POWER with eps one grid cell; only the strongest
# INFLUENCES bones per vertex survive, so a torso vertex never follows a distant limb.
WEIGHT_POWER = 4
INFLUENCES = 2
# Rest bones shorter than this (px) have no direction of their own.
MIN_BONE_PX = 1.0


@dataclass(frozen=True)
class Binding:
    """bones: (V, INFLUENCES) int64 bone indices; weights: (V, INFLUENCES) float64, rows sum to 1.
    triangle_bone: (T,) int64, the bone with the largest summed weight over a triangle's vertices."""

    bones: np.ndarray
    weights: np.ndarray
    triangle_bone: np.ndarray

    @property
    def triangle_layer(self) -> np.ndarray:
        """(T,) index into LAYERS."""
        return BONE_LAYER[self.triangle_bone]


def part_labels(region: np.ndarray, joints: np.ndarray, step: int = 3, smooth_px: float = 3.0) -> np.ndarray:
    """Split the character into its layers: each pixel of `region` goes to the layer (index into
    LAYERS) of the bone nearest to it inside the region; -1 outside. (H, W) int64.

    Distances are sampled every `step` px and the borders between parts are smoothed over about
    `smooth_px`, so every part is cut out along a clean line rather than along mesh triangles.
    region: (H, W) bool; joints: (15, >=2) rest joints in image px.
    """
    height, width = region.shape
    coarse = region[::step, ::step]
    rows, cols = np.nonzero(coarse)
    points = np.stack([cols * step, rows * step], axis=1).astype(np.float64)
    distances, _ = geodesic_bone_distances(region, joints[:, :2], points, BOUND_BONES)
    nearest = BONE_LAYER[BOUND_BONES][np.argmin(distances, axis=1)]
    votes = np.zeros((len(LAYERS), height, width), np.float32)
    for layer in range(len(LAYERS)):
        sparse = np.zeros(coarse.shape, np.float32)
        sparse[rows[nearest == layer], cols[nearest == layer]] = 1.0
        full = cv2.resize(sparse, (width, height), interpolation=cv2.INTER_LINEAR)
        votes[layer] = cv2.GaussianBlur(full, (0, 0), smooth_px)
    labels = votes.argmax(axis=0).astype(np.int64)
    labels[~region] = -1
    return labels


def joint_caps(labels: np.ndarray, joints: np.ndarray) -> dict[int, np.ndarray]:
    """Per limb layer, a disk of the character around the limb's root joint (shoulder, hip) that the
    limb carries as well, a ball joint drawn behind everything: turning about that joint, it still
    covers the pixels of the disk, so no notch opens where the limb met the torso at rest. The disk
    reaches the farthest pixel of the border between the limb and the torso, at most half the
    limb's first bone; it takes torso and own-limb pixels only, never another limb's.

    labels: (H, W) int from part_labels; joints: (15, >=2) rest joints, image px.
    Returns {layer: (H, W) bool}; a limb that does not touch the torso gets no cap."""
    torso = labels == 0
    touching_torso = cv2.dilate(torso.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    rows, cols = np.mgrid[: labels.shape[0], : labels.shape[1]]
    caps = {}
    for layer in range(1, len(LAYERS)):
        root, first = _PART_JOINTS[layer][:2]
        border_rows, border_cols = np.nonzero((labels == layer) & touching_torso)
        if len(border_rows) == 0:
            continue
        centre = joints[root, :2]
        reach = np.hypot(border_cols - centre[0], border_rows - centre[1]).max()
        radius = min(reach, 0.5 * np.linalg.norm(joints[first, :2] - centre))
        disk = (cols - centre[0]) ** 2 + (rows - centre[1]) ** 2 <= radius**2
        caps[layer] = disk & (torso | (labels == layer))
    return caps


def bind_parts(vertices: np.ndarray, vertex_layer: np.ndarray, triangles: np.ndarray, region: np.ndarray,
               joints: np.ndarray) -> Binding:
    """Weights of every mesh vertex over the bones of its own part (layer), from distances measured
    inside `region`, so a vertex never follows a bone across a gap in the drawing and no part is
    dragged along by another (each part moves as a cut-out; bones of one part blend at its joints).

    vertices: (V, 2) image px; vertex_layer: (V,) index into LAYERS; triangles: (T, 3);
    region: (H, W) bool, where the character is; joints: (15, >=2) rest joints in image px.
    """
    distances, cell = geodesic_bone_distances(region, joints[:, :2], vertices, BOUND_BONES)
    strength = np.zeros((len(vertices), len(BONES)))
    strength[:, BOUND_BONES] = (distances + cell) ** -float(WEIGHT_POWER)
    strength *= BONE_LAYER[None, :] == vertex_layer[:, None]
    # Stable order, so a tie always resolves to the same bone.
    bones = np.argsort(-strength, axis=1, kind="stable")[:, :INFLUENCES]
    weights = np.take_along_axis(strength, bones, axis=1)
    weights /= weights.sum(axis=1, keepdims=True)

    dense = np.zeros_like(strength)
    np.put_along_axis(dense, bones, weights, axis=1)
    triangle_bone = dense[triangles].sum(axis=1).argmax(axis=1)
    return Binding(bones, weights, triangle_bone)


def geodesic_bone_distances(region: np.ndarray, joints: np.ndarray, points: np.ndarray,
                            bones: np.ndarray) -> tuple[np.ndarray, float]:
    """Shortest paths inside `region` from each point to each of `bones` (indices into BONES), on a
    grid of about GEODESIC_CELLS cells across. Returns ((N, len(bones)) px, cell size px). A point
    whose piece of the region holds none of the bones gets straight-line distances instead.
    region: (H, W) bool; joints: (15, 2) px; points: (N, 2) px."""
    height, width = region.shape
    cell = max(1.0, max(height, width) / GEODESIC_CELLS)
    grid_w, grid_h = max(1, round(width / cell)), max(1, round(height / cell))
    cell_x, cell_y = width / grid_w, height / grid_h
    coverage = cv2.resize(region.astype(np.float32), (grid_w, grid_h), interpolation=cv2.INTER_AREA)
    inside = coverage >= 0.5 if (coverage >= 0.5).any() else coverage > 0
    graph = _grid_graph(inside, cell_x, cell_y)

    # Every grid cell's nearest inside cell, to snap points and bone samples onto the graph.
    nearest = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
    nearest_node = (nearest[0] * grid_w + nearest[1]).ravel()
    scale = np.array([cell_x, cell_y])

    def cells_of(xy: np.ndarray) -> np.ndarray:
        col = np.clip(np.round((xy[:, 0] + 0.5) / cell_x - 0.5), 0, grid_w - 1).astype(np.int64)
        row = np.clip(np.round((xy[:, 1] + 0.5) / cell_y - 0.5), 0, grid_h - 1).astype(np.int64)
        return row * grid_w + col

    def centre_of(node: np.ndarray) -> np.ndarray:
        return (np.stack([node % grid_w, node // grid_w], axis=1) + 0.5) * scale - 0.5

    point_node = nearest_node[cells_of(points)]
    snap = np.linalg.norm(points - centre_of(point_node), axis=1)

    distances = np.empty((len(points), len(bones)))
    for column, b in enumerate(bones):
        parent, child = BONES[b]
        end = joints[child] + REACH_PAST_END.get(b, 0.0) * (joints[child] - joints[parent])
        samples = _bone_samples(joints[parent], end, min(cell_x, cell_y) / 2)
        nodes = cells_of(samples)
        if b == TORSO_BONE:
            nodes = np.concatenate([nodes, _polygon_nodes(joints[list(TORSO_PLATE)], cell_x, cell_y, inside.shape)])
        on_mask = nodes[inside.ravel()[nodes]]
        sources = np.unique(on_mask if len(on_mask) else nearest_node[nodes])
        from_bone = dijkstra(graph, directed=False, indices=sources, min_only=True)
        distances[:, column] = from_bone[point_node] + snap

    stranded = ~np.isfinite(distances).any(axis=1)
    if stranded.any():
        distances[stranded] = segment_distances(points[stranded], joints, bones)
    return distances, cell


def segment_distances(points: np.ndarray, joints: np.ndarray, bones: np.ndarray) -> np.ndarray:
    """Straight-line distances from points (N, 2) to the segments of `bones` (indices into BONES)
    between joints (15, 2). (N, len(bones))."""
    a = joints[BONE_PARENT[bones]][None]
    ab = joints[BONE_CHILD[bones]][None] - a
    ap = points[:, None] - a
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(ap - t[..., None] * ab, axis=-1)


def bone_transforms(rest: np.ndarray, posed: np.ndarray, across_scale: float) -> np.ndarray:
    """The affine map of every bone from rest to posed space.

    rest: (15, 2) image px; posed: (n, 15, 2) canvas px; across_scale: canvas px per image px
    across a bone. Returns (n, 14, 2, 3). Bone b maps its rest parent and child joints exactly onto
    the posed ones: it turns by the change of the bone's angle, stretches along the bone by
    posed length / rest length, and scales across it by across_scale, so a limb keeps its drawn
    width when the pose foreshortens it. A bone with no rest direction (shorter than MIN_BONE_PX)
    turns like the bone it hangs from, scales by across_scale, and carries its child joint exactly.
    """
    rest_vec = rest[BONE_CHILD] - rest[BONE_PARENT]  # (14, 2)
    posed_vec = posed[:, BONE_CHILD] - posed[:, BONE_PARENT]  # (n, 14, 2)
    rest_len = np.linalg.norm(rest_vec, axis=-1)
    posed_len = np.linalg.norm(posed_vec, axis=-1)
    has_rest_dir = rest_len >= MIN_BONE_PX
    has_posed_dir = posed_len > 1e-6

    turn = np.arctan2(posed_vec[..., 1], posed_vec[..., 0]) - np.arctan2(rest_vec[:, 1], rest_vec[:, 0])
    for b, parent in enumerate(PARENT_BONE):
        inherited = turn[:, parent] if parent >= 0 else 0.0
        turn[:, b] = np.where(has_rest_dir[b] & has_posed_dir[:, b], turn[:, b], inherited)

    # Scale in the rest bone's own frame (along, across), then turn.
    along_dir = np.where(has_rest_dir[:, None], rest_vec / np.maximum(rest_len, 1e-12)[:, None], [1.0, 0.0])
    across_dir = np.stack([-along_dir[:, 1], along_dir[:, 0]], axis=-1)
    along_scale = np.where(has_rest_dir, posed_len / np.maximum(rest_len, 1e-12), across_scale)  # (n, 14)
    stretch = (along_scale[..., None, None] * np.einsum("bi,bj->bij", along_dir, along_dir)
               + across_scale * np.einsum("bi,bj->bij", across_dir, across_dir))  # (n, 14, 2, 2)
    cos, sin = np.cos(turn), np.sin(turn)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    linear = rotation @ stretch
    offset = posed[:, BONE_CHILD] - np.einsum("nbij,bj->nbi", linear, rest[BONE_CHILD])
    return np.concatenate([linear, offset[..., None]], axis=-1)


def skin(points: np.ndarray, binding: Binding, transforms: np.ndarray) -> np.ndarray:
    """Linear blend skinning. points: (V, 2) rest px; transforms: (n, 14, 2, 3). Returns (n, V, 2)."""
    blended = np.einsum("vk,nvkij->nvij", binding.weights, transforms[:, binding.bones])
    return np.einsum("nvij,vj->nvi", blended[..., :2], points) + blended[..., 2]


def joint_anchors(rest: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                  triangle_layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each rig joint sits in the mesh of its own part: the triangle holding it (the nearest
    one when the joint lies outside the part) and its barycentric coordinates there. Reading the
    skinned mesh through these gives the joints the puppet actually drew.

    rest: (15, 2) px; vertices: (V, 2); triangles: (T, 3); triangle_layer: (T,).
    Returns triangle index (15,) and barycentric weights (15, 3) (negative outside the triangle).
    """
    corners = vertices[triangles]  # (T, 3, 2)
    chosen = np.zeros(len(rest), np.int64)
    weights = np.zeros((len(rest), 3))
    for joint, point in enumerate(rest):
        candidates = np.flatnonzero(triangle_layer == JOINT_LAYER[joint])
        if len(candidates) == 0:
            candidates = np.arange(len(triangles))
        bary = _barycentric(corners[candidates], point)
        inside = np.flatnonzero((bary >= -1e-9).all(axis=1))
        if len(inside):
            pick = inside[0]
        else:
            pick = int(np.argmin(np.linalg.norm(corners[candidates].mean(axis=1) - point, axis=1)))
        chosen[joint], weights[joint] = candidates[pick], bary[pick]
    return chosen, weights


def drawn_joints(skinned: np.ndarray, triangles: np.ndarray, anchor_triangle: np.ndarray,
                 anchor_weights: np.ndarray) -> np.ndarray:
    """The joints as the deformed mesh carries them. skinned: (n, V, 2). Returns (n, 15, 2)."""
    return np.einsum("jk,njkd->njd", anchor_weights, skinned[:, triangles[anchor_triangle]])


def _barycentric(triangles: np.ndarray, point: np.ndarray) -> np.ndarray:
    """(T, 3) barycentric coordinates of a point in each of triangles (T, 3, 2)."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    ab, ac, ap = b - a, c - a, point - a
    area = ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]
    area = np.where(np.abs(area) < 1e-12, 1e-12, area)
    wb = (ap[:, 0] * ac[:, 1] - ap[:, 1] * ac[:, 0]) / area
    wc = (ab[:, 0] * ap[:, 1] - ab[:, 1] * ap[:, 0]) / area
    return np.stack([1.0 - wb - wc, wb, wc], axis=1)


def _grid_graph(inside: np.ndarray, step_x: float, step_y: float):
    """8-neighbour graph of the inside cells of a (h, w) grid, edge lengths in px; node = row*w+col."""
    h, w = inside.shape
    node = np.arange(h * w).reshape(h, w)
    diagonal = float(np.hypot(step_x, step_y))
    sources, targets, lengths = [], [], []
    for dy, dx, length in ((0, 1, step_x), (1, 0, step_y), (1, 1, diagonal), (1, -1, diagonal)):
        rows = slice(0, h - dy)
        cols = slice(max(0, -dx), w - max(0, dx))
        rows_to = slice(dy, h)
        cols_to = slice(max(0, dx), w - max(0, -dx))
        both = inside[rows, cols] & inside[rows_to, cols_to]
        sources.append(node[rows, cols][both])
        targets.append(node[rows_to, cols_to][both])
        lengths.append(np.full(int(both.sum()), length))
    return coo_matrix((np.concatenate(lengths), (np.concatenate(sources), np.concatenate(targets))),
                      shape=(h * w, h * w)).tocsr()


def _polygon_nodes(corners: np.ndarray, cell_x: float, cell_y: float, shape: tuple[int, int]) -> np.ndarray:
    """Grid nodes (row * w + col) inside the convex hull of `corners` ((N, 2) px)."""
    in_cells = (corners + 0.5) / [cell_x, cell_y] - 0.5
    hull = cv2.convexHull(np.round(in_cells).astype(np.int32))
    covered = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(covered, hull, 1)
    return np.flatnonzero(covered)


def _bone_samples(a: np.ndarray, b: np.ndarray, step: float) -> np.ndarray:
    """Points from a to b (both included) at most `step` apart. (N, 2)."""
    count = max(2, int(np.ceil(np.linalg.norm(b - a) / step)) + 1)
    t = np.linspace(0.0, 1.0, count)[:, None]
    return a + t * (b - a)
