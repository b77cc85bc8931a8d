"""Drawing the posed mesh: texture, background, triangle rasterisation and compositing.

Canvas and texture coordinates are pixels with pixel centres on integers (cv2.remap's convention).
The per-frame path is vectorised over triangles and pixels; callers loop over the draw layers only.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from farm.types import Canvas

# Inpainting runs on a copy at most this many pixels on its longer side; the background under a
# character is smooth enough that the upsampled fill is indistinguishable, and it is 10-50x faster.
INPAINT_SIDE = 256
# Tolerance (px) for pixel centres lying exactly on a triangle edge: both neighbours cover them,
# so no crack opens between triangles from rounding.
EDGE_EPS = 1e-4
# Canvas pixels no triangle covers sample the texture here, far outside it, so they stay transparent.
NOWHERE = -16.0


@dataclass(frozen=True)
class Texture:
    """The character's pixels, ready to sample.

    rgba: (h, w, 4) uint8, RGB premultiplied by alpha, alpha the mask feathered by 1 px (so bilinear
    sampling never drags the drawing's paper into the edge). opaque: (h, w) bool, alpha >= 50%.
    from_image: (2, 3) affine from character-image px to texture px (the texture may be smaller).
    """

    rgba: np.ndarray
    opaque: np.ndarray
    from_image: np.ndarray


def make_texture(image: np.ndarray, mask: np.ndarray, scale: float) -> Texture:
    """Texture of `image` ((H, W, 3) uint8) cut out by `mask` ((H, W) bool), stored at `scale`
    (<= 1) of the image size so that sampling a shrunk character does not alias."""
    alpha = cv2.blur(mask.astype(np.uint8) * 255, (3, 3))
    rgba = np.dstack([(image.astype(np.uint16) * alpha[..., None] + 127) // 255, alpha]).astype(np.uint8)
    height, width = mask.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        rgba = cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)
    sx, sy = size[0] / width, size[1] / height
    # cv2.resize keeps pixel-area centres aligned: x' = (x + 0.5) * s - 0.5.
    from_image = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    return Texture(rgba, rgba[..., 3] >= 128, from_image)


def remove_character(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The character image with the character painted out (cv2 TELEA inpainting), so the rest-pose
    body leaves no ghost when a limb moves away. image: (H, W, 3) uint8; mask: (H, W) bool."""
    # 1. Grow the hole past the drawing's anti-aliased edge and contact shadow.
    height, width = mask.shape
    grow = max(3, round(0.01 * max(height, width)))
    hole = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= grow

    # 2. Inpaint a small copy; a small cell touching the hole counts as hole, so no character
    #    colour leaks into the fill.
    factor = min(1.0, INPAINT_SIDE / max(height, width))
    small_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.float32), small_size, interpolation=cv2.INTER_AREA) > 0
    small_hole = cv2.dilate(small_hole.astype(np.uint8), np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(small, small_hole, 3, cv2.INPAINT_TELEA)

    # 3. Back to full size, pasted inside the hole only.
    background = image.copy()
    background[hole] = cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR)[hole]
    return background


def fit_background(background: np.ndarray, canvas: Canvas) -> np.ndarray:
    """The background on the canvas. (canvas.height, canvas.width, 3) uint8.

    "image": scaled by canvas.scale with its top-left corner at the canvas origin, the edge pixels
    repeated where the canvas is larger (padding to even sizes). "video": scaled to cover the
    canvas, centred, the overflow cropped.
    """
    height, width = background.shape[:2]
    if canvas.mode == "image":
        scale = canvas.scale
    else:
        scale = max(canvas.width / width, canvas.height / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if canvas.mode != "image":
        size = (max(size[0], canvas.width), max(size[1], canvas.height))
    shrinking = size[0] < width
    scaled = cv2.resize(background, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if canvas.mode == "image":
        left = top = 0
    else:
        left, top = (size[0] - canvas.width) // 2, (size[1] - canvas.height) // 2
    cropped = scaled[top:top + canvas.height, left:left + canvas.width]
    pad_bottom, pad_right = canvas.height - cropped.shape[0], canvas.width - cropped.shape[1]
    return cv2.copyMakeBorder(cropped, 0, pad_bottom, 0, pad_right, cv2.BORDER_REPLICATE)


def source_affines(posed: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per triangle, the affine map from its posed corners to its source corners.

    posed: (..., T, 3, 2) canvas px; source: (T, 3, 2) texture px. Returns ((..., T, 2, 3) maps,
    (..., T) bool drawable); a triangle squashed to a line or a point is not drawable (map zero).
    """
    d1 = posed[..., 1, :] - posed[..., 0, :]
    d2 = posed[..., 2, :] - posed[..., 0, :]
    det = d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0]
    drawable = np.abs(det) > 1e-9
    inv_det = np.where(drawable, 1.0 / np.where(drawable, det, 1.0), 0.0)
    # Inverse of the 2x2 matrix with columns d1, d2.
    inverse = np.stack([np.stack([d2[..., 1], -d2[..., 0]], -1),
                        np.stack([-d1[..., 1], d1[..., 0]], -1)], -2) * inv_det[..., None, None]
    e = np.stack([source[:, 1] - source[:, 0], source[:, 2] - source[:, 0]], axis=-1)  # (T, 2, 2) columns
    linear = e @ inverse
    offset = source[:, 0] - np.einsum("...ij,...j->...i", linear, posed[..., 0, :])
    return np.concatenate([linear, offset[..., None]], axis=-1), drawable


def rasterize_layer(posed: np.ndarray, to_source: np.ndarray, opaque: np.ndarray,
                    size: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray, np.ndarray] | None:
    """Sampling maps for one layer of triangles: for every canvas pixel the layer covers, where to
    read the texture.

    posed: (T, 3, 2) canvas px, in draw order (later triangles in front); to_source: (T, 2, 3)
    canvas px -> texture px; opaque: (h, w) bool texture mask; size: canvas (width, height).
    Returns ((x0, y0), map_x, map_y) with (bh, bw) float32 maps for the layer's bounding box at
    (x0, y0) (NOWHERE where no triangle is), or None if the layer covers no pixel.

    Pixels are generated by scanlines: per triangle its rows, per row the covered span, then all
    pixels of all spans at once. A pixel that several triangles cover takes the front-most one whose
    texture is opaque there, so a limb folding over itself shows its body, not its transparent rim.
    """
    width, height = size
    if len(posed) == 0:  # a part the picture does not show (the legs of a half-body portrait)
        return None
    # 1. The layer's bounding box on the canvas.
    x0 = max(0, int(np.floor(posed[..., 0].min())))
    x1 = min(width - 1, int(np.ceil(posed[..., 0].max())))
    y0 = max(0, int(np.floor(posed[..., 1].min())))
    y1 = min(height - 1, int(np.ceil(posed[..., 1].max())))
    if x1 < x0 or y1 < y0:
        return None
    box_w, box_h = x1 - x0 + 1, y1 - y0 + 1

    # 2. Rows of every triangle, from its corners sorted top to bottom.
    by_y = np.take_along_axis(posed, np.argsort(posed[..., 1], axis=1, kind="stable")[..., None], axis=1)
    top, mid, bottom = by_y[:, 0], by_y[:, 1], by_y[:, 2]
    first = np.maximum(np.ceil(top[:, 1] - EDGE_EPS), y0).astype(np.int64)
    last = np.minimum(np.floor(bottom[:, 1] + EDGE_EPS), y1).astype(np.int64)
    rows_per = np.maximum(last - first + 1, 0)
    row_y = np.repeat(first, rows_per) + _ramp(rows_per)

    # 3. The covered span of every row: between the long edge (top to bottom) and the short edge
    #    on the row's side of the middle corner. Rows are clamped into the triangle, so a steep
    #    slope never throws a row that grazes a corner far off.
    def per_row(values: np.ndarray) -> np.ndarray:
        return np.repeat(values, rows_per)

    y = np.clip(row_y, per_row(top[:, 1]), per_row(bottom[:, 1]))
    long_x = per_row(top[:, 0]) + (y - per_row(top[:, 1])) * per_row(_slope(top, bottom))
    upper = y < per_row(mid[:, 1])
    short_x = np.where(upper,
                       per_row(top[:, 0]) + (y - per_row(top[:, 1])) * per_row(_slope(top, mid)),
                       per_row(mid[:, 0]) + (y - per_row(mid[:, 1])) * per_row(_slope(mid, bottom)))
    span_x = np.maximum(np.ceil(np.minimum(long_x, short_x) - EDGE_EPS), x0)
    span_end = np.minimum(np.floor(np.maximum(long_x, short_x) + EDGE_EPS), x1)
    span_len = np.maximum(span_end - span_x + 1, 0).astype(np.int64)
    span_x = span_x.astype(np.int64)

    # 4. All pixels: per row a start value plus a step per pixel along x.
    step = _ramp(span_len)
    affine = np.repeat(to_source, rows_per, axis=0)  # (R, 2, 3)
    start_x = affine[:, 0, 0] * span_x + affine[:, 0, 1] * row_y + affine[:, 0, 2]
    start_y = affine[:, 1, 0] * span_x + affine[:, 1, 1] * row_y + affine[:, 1, 2]

    def per_pixel(values: np.ndarray, dtype=np.float32) -> np.ndarray:
        return np.repeat(values.astype(dtype), span_len)

    source_x = per_pixel(start_x) + per_pixel(affine[:, 0, 0]) * step
    source_y = per_pixel(start_y) + per_pixel(affine[:, 1, 0]) * step
    pixel = per_pixel((row_y - y0) * box_w + (span_x - x0), np.int64) + step
    if len(pixel) == 0:
        return None

    # 5. Depth: opaque texels beat transparent rims, then later triangles beat earlier ones.
    tex_h, tex_w = opaque.shape
    texel = (np.clip((source_y + 0.5).astype(np.int64), 0, tex_h - 1) * tex_w
             + np.clip((source_x + 0.5).astype(np.int64), 0, tex_w - 1))
    key = per_pixel(np.repeat(np.arange(len(posed)), rows_per), np.int64) + len(posed) * opaque.ravel()[texel]
    depth = np.full(box_w * box_h, -1, np.int64)
    np.maximum.at(depth, pixel, key)
    front = key == depth[pixel]

    # 6. Maps from the front pixels.
    map_x = np.full(box_w * box_h, NOWHERE, np.float32)
    map_y = np.full(box_w * box_h, NOWHERE, np.float32)
    map_x[pixel[front]] = source_x[front]
    map_y[pixel[front]] = source_y[front]
    return (x0, y0), map_x.reshape(box_h, box_w), map_y.reshape(box_h, box_w)


def draw_layer(frame: np.ndarray, texture: Texture, origin: tuple[int, int],
               map_x: np.ndarray, map_y: np.ndarray) -> None:
    """Sample the texture through the maps and composite it (premultiplied "over") onto
    frame ((H, W, 3) uint8, changed in place) at origin (x0, y0)."""
    x0, y0 = origin
    box_h, box_w = map_x.shape
    sampled = cv2.remap(texture.rgba, map_x, map_y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    under = frame[y0:y0 + box_h, x0:x0 + box_w]
    clear = 255 - sampled[..., 3:]
    under[...] = sampled[..., :3] + (under * clear.astype(np.uint16) + 127) // 255


def _ramp(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c-1 for every c in counts, concatenated."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total) - np.repeat(starts, counts)


def _slope(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dx/dy of the edges a -> b ((T, 2) each); 0 for a flat edge, whose ends the other edges reach."""
    dy = b[:, 1] - a[:, 1]
    flat = np.abs(dy) < 1e-12
    return np.where(flat, 0.0, (b[:, 0] - a[:, 0]) / np.where(flat, 1.0, dy))
