"""The triangle mesh of a character: the sheet the puppet bends.

Coordinates are character-image pixels, x to the right, y down, pixel centres on integers.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay, QhullError

from farm.errors import FarmError

# The mesh reaches this far past the mask, so the 1-px feathered edge of the texture lies inside it
# and every mask pixel is covered although outline vertices sit on boundary-pixel centres.
MESH_MARGIN_PX = 2
# Outline simplification tolerance (px); well inside MESH_MARGIN_PX, so chords never cut the mask.
OUTLINE_TOLERANCE_PX = 1.0
# Edge samples may fall this far outside the region: chords between outline vertices across a
# shallow concavity stay, bridges across a real gap between limbs do not.
EDGE_SLACK_PX = 1
# Grid points closer than this fraction of the spacing to the outline make slivers; drop them.
INTERIOR_CLEARANCE = 0.4


@dataclass(frozen=True)
class PartMesh:
    """One mesh per body part, cut along the part borders. vertices: (V, 2) image px; triangles:
    (T, 3); vertex_layer: (V,) and triangle_layer: (T,) the part each belongs to (or whose cap it
    is); region: (H, W)
    bool, the character's mask grown by MESH_MARGIN_PX (see mesh_region); the mesh lies in it."""

    vertices: np.ndarray
    triangles: np.ndarray
    vertex_layer: np.ndarray
    triangle_layer: np.ndarray
    region: np.ndarray
    triangle_cap: np.ndarray  # (T,) bool: the triangle is one of a part's caps (see build_part_meshes)


def build_part_meshes(region: np.ndarray, labels: np.ndarray, grid_divisions: int = 40,
                      pins: dict[int, np.ndarray] | None = None,
                      caps: dict[int, np.ndarray] | None = None) -> PartMesh:
    """Triangulate every part of `labels` ((H, W) int, -1 outside `region`) on its own, each grown
    by MESH_MARGIN_PX into its neighbours, so parts overlap slightly and show no crack at rest but
    can move apart without stretching a triangle across the border.

    pins: per part, points ((N, 2) px) that become mesh vertices where they lie in the part — the
    rig joints, so the mesh bends exactly at them. caps: per part, (H, W) bool pixels meshed once
    more on their own, as a separate sheet that moves with the part (skinning.joint_caps)."""
    pins, caps = pins or {}, caps or {}
    spacing = max(region.shape) / grid_divisions
    size = 2 * MESH_MARGIN_PX + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    vertices, triangles, vertex_layer, triangle_layer, triangle_cap = [], [], [], [], []
    offset = 0
    sheets = [(layer, labels == layer, False) for layer in range(int(labels.max()) + 1)]
    sheets += [(layer, cap, True) for layer, cap in sorted(caps.items())]
    for layer, part, is_cap in sheets:
        if not part.any():
            continue
        grown = cv2.dilate(part.astype(np.uint8), kernel).astype(bool) & region
        points, tris = _triangulate(grown, spacing, pins.get(layer, np.zeros((0, 2))))
        vertices.append(points)
        triangles.append(tris + offset)
        vertex_layer.append(np.full(len(points), layer))
        triangle_layer.append(np.full(len(tris), layer))
        triangle_cap.append(np.full(len(tris), is_cap))
        offset += len(points)
    if not triangles or offset == 0 or sum(len(t) for t in triangles) == 0:
        raise FarmError("character mask", "leaves no triangle inside the character",
                        "give a mask with --character-mask that covers the whole character")
    return PartMesh(np.concatenate(vertices), np.concatenate(triangles), np.concatenate(vertex_layer),
                    np.concatenate(triangle_layer), region, np.concatenate(triangle_cap))


def _triangulate(region: np.ndarray, spacing: float, pins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (outline of every boundary, a grid inside, and the pins that lie inside) and the
    Delaunay triangles that lie inside `region`; unused vertices dropped. ((V, 2) px, (T, 3));
    empty for a region too small."""
    points = np.concatenate([outline_points(region, spacing / 2), interior_points(region, spacing)])
    height, width = region.shape
    cols, rows = np.round(pins).astype(np.int64).T if len(pins) else (np.zeros(0, np.int64),) * 2
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    inside[inside] = region[rows[inside], cols[inside]]
    for pin in pins[inside]:
        # A grid point on top of a pin would make a sliver: the pin takes its place.
        points = np.concatenate([points[np.linalg.norm(points - pin, axis=1) > 0.25 * spacing], pin[None]])
    if len(points) < 3:
        return np.zeros((0, 2)), np.zeros((0, 3), np.int64)
    try:
        triangles = Delaunay(points).simplices.astype(np.int64)
    except QhullError:  # all points on a line: a sliver of a part
        return np.zeros((0, 2)), np.zeros((0, 3), np.int64)
    triangles = triangles[_inside_region(points[triangles], region)]
    used, triangles = np.unique(triangles, return_inverse=True)
    return points[used], triangles.reshape(-1, 3)


def mesh_region(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of the mask grown by MESH_MARGIN_PX. (H, W) bool."""
    size = 2 * MESH_MARGIN_PX + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    grown = cv2.dilate(mask.astype(np.uint8), kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    if count < 2:
        raise FarmError("character mask", "is empty",
                        "give a mask with --character-mask or a character image with an alpha channel")
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def outline_points(region: np.ndarray, max_step: float) -> np.ndarray:
    """Points along every boundary of the region (outer and holes), simplified within
    OUTLINE_TOLERANCE_PX, then subdivided so no two neighbours are more than max_step apart. (N, 2)."""
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    pieces = []
    for contour in contours:
        corners = cv2.approxPolyDP(contour, OUTLINE_TOLERANCE_PX, closed=True)[:, 0, :].astype(np.float64)
        pieces.append(_subdivide_closed(corners, max_step))
    return np.concatenate(pieces) if pieces else np.zeros((0, 2))


def interior_points(region: np.ndarray, spacing: float) -> np.ndarray:
    """Grid points at `spacing` px that lie in the region and clear of its outline. (N, 2)."""
    height, width = region.shape
    xs = np.arange(spacing / 2, width, spacing)
    ys = np.arange(spacing / 2, height, spacing)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    clearance = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)
    cols, rows = np.round(grid).astype(np.int64).T
    keep = clearance[np.minimum(rows, height - 1), np.minimum(cols, width - 1)] >= INTERIOR_CLEARANCE * spacing
    return grid[keep]


def _subdivide_closed(corners: np.ndarray, max_step: float) -> np.ndarray:
    """Insert evenly spaced points on each edge of a closed polygon ((N, 2)) so that no edge is
    longer than max_step; the corners are kept."""
    following = np.roll(corners, -1, axis=0)
    lengths = np.linalg.norm(following - corners, axis=1)
    parts = np.maximum(1, np.ceil(lengths / max_step)).astype(np.int64)
    edge = np.repeat(np.arange(len(corners)), parts)
    t = (np.arange(parts.sum()) - np.repeat(np.cumsum(parts) - parts, parts)) / parts[edge]
    return corners[edge] + t[:, None] * (following[edge] - corners[edge])


def _inside_region(triangles: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(T,) bool: the centroid and points at 1/4, 1/2 and 3/4 of every edge lie in the region, which
    rejects Delaunay triangles that bridge the gap between an arm and the body or between the legs.
    triangles: (T, 3, 2) vertex positions."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    samples = [(a + b + c) / 3]
    for p, q in ((a, b), (b, c), (c, a)):
        samples += [p + t * (q - p) for t in (0.25, 0.5, 0.75)]
    samples = np.round(np.stack(samples, axis=1)).astype(np.int64)  # (T, 10, 2)
    height, width = region.shape
    cols = np.clip(samples[..., 0], 0, width - 1)
    rows = np.clip(samples[..., 1], 0, height - 1)
    size = 2 * EDGE_SLACK_PX + 1
    slack = cv2.dilate(region.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    area = np.abs(np.cross(b - a, c - a))
    return region[rows[:, 0], cols[:, 0]] & slack[rows, cols].all(axis=1).astype(bool) & (area > 1e-6)
