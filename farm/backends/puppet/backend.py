"""PuppetBackend: the default CPU backend. The character image becomes a 2D skeletal puppet (a mask
mesh bound to the rig's bones, as in Meta's AnimatedDrawings), posed by the target joints with
linear blend skinning and drawn layer by layer over the character's own background with the
character painted out. Deterministic, no weights, no GPU.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from farm.backends.base import BackendSpec, WindowRequest, WindowResult
from farm.backends.puppet.mesh import build_part_meshes, mesh_region
from farm.backends.puppet.raster import (
    Texture,
    draw_layer,
    fit_background,
    make_texture,
    rasterize_layer,
    remove_character,
    source_affines,
)
from farm.backends.puppet.skinning import (
    JOINT_LAYER,
    LAYERS,
    LIMBS,
    MIN_BONE_PX,
    TORSO_BONE,
    Binding,
    bind_parts,
    bone_transforms,
    drawn_joints,
    joint_anchors,
    joint_caps,
    part_labels,
    skin,
)
from farm.errors import FarmError
from farm.rig import BONES, JOINTS
from farm.types import Canvas, Character

DEFORMERS = ("lbs",)
CANVAS_MODES = ("image", "video")
# The layer index of the limbs' caps (skinning.joint_caps): drawn first, behind everything, they
# fill the notch a limb leaves where it met the torso without covering the torso's own drawing.
CAPS = len(LAYERS)
# A mask smaller than this fraction of the image is a failed segmentation, not a character.
MIN_MASK_FRACTION = 0.01
# Prepared characters and canvases kept per worker; a shot re-prepares the same pair many times.
CACHE_SIZE = 4
# WindowRequest.options key: per frame (or one int for all), how many of layers[frame]'s limbs,
# counted from the back, are drawn behind the torso (default 0: every limb in front of it).
BEHIND_TORSO = "limbs_behind_torso"

_T = TypeVar("_T")


@dataclass(frozen=True)
class Puppet:
    """Everything about one character that does not depend on the canvas.

    rest: (15, 2) rest joints, image px. vertices: (V, 2) image px. triangles: (T, 3), sorted by
    layer and, inside a layer, by bone down the chain (later = drawn in front); layer_slices[l] picks
    layer l's triangles (l = CAPS: the limbs' caps). binding: per-vertex bone weights (triangle_bone in the sorted order).
    texture_mask: (H, W) bool, the mask pixels the mesh covers. background: (H, W, 3) uint8, the
    image with the character painted out.
    """

    rest: np.ndarray
    vertices: np.ndarray
    triangles: np.ndarray
    layer_slices: tuple[slice, ...]
    binding: Binding
    joint_anchors: tuple[np.ndarray, np.ndarray]
    texture_mask: np.ndarray
    background: np.ndarray


@dataclass(frozen=True)
class Stage:
    """A puppet made ready for one canvas. source_triangles: (T, 3, 2) rest triangles in texture px;
    background: (canvas.height, canvas.width, 3) uint8."""

    puppet: Puppet
    canvas: Canvas
    texture: Texture
    source_triangles: np.ndarray
    background: np.ndarray


class PuppetBackend:
    """2D skeletal animation of the character image; see the module docstring.

    grid_divisions: mesh vertices across the longer image side (about). deformer: "lbs" (linear
    blend skinning) only, for now.
    Targets are used as given (x, y; the confidence is ignored, the retargeter fills every joint).
    In "image" mode image px p sits at canvas px p * canvas.scale, as the background does.
    WindowRequest.options: "limbs_behind_torso", an int or one per frame (default 0): how many of
    layers[frame]'s limbs, from the back, are drawn behind the torso (a figure in profile).
    The same request gives the same bytes.
    """

    # Its pixels are the character image's own, moved and composited by a rig that a trained model
    # (mediapipe's pose landmarker) drives: the character is shown doing what it never did, so the
    # label says a trained model took part (compositeWithTrainedAlgorithmicMedia), not merely that
    # pictures were combined (composite), which readers do not show as AI-made. The rig is moved
    # by the performer's body alone: hands and face are not tracked for it. Each frame depends on its
    # own pose only, so windows are batches cut end to end: an overlap would draw frames twice for
    # nothing to blend.
    spec = BackendSpec(name="puppet", version="1", window_length=48, window_overlap=0,
                       frame_multiple=1, can_chain=False, num_gpus=0, deterministic=True,
                       source_type="compositeWithTrainedAlgorithmicMedia", pose_parts=("body",))

    def __init__(self, *, grid_divisions: int = 40, deformer: str = "lbs") -> None:
        if deformer not in DEFORMERS:
            raise FarmError("backend.deformer", f"is {deformer!r}, not one of: {', '.join(DEFORMERS)}",
                            f"set backend.deformer to one of: {', '.join(DEFORMERS)}")
        if not isinstance(grid_divisions, int) or grid_divisions < 4:
            raise FarmError("backend.grid_divisions", f"is {grid_divisions!r}, not an integer >= 4",
                            "set backend.grid_divisions to about 40 (mesh vertices across the image)")
        self.grid_divisions = grid_divisions
        self.deformer = deformer
        self._puppets: OrderedDict[Hashable, Puppet] = OrderedDict()
        self._stages: OrderedDict[Hashable, Stage] = OrderedDict()
        self._stage: Stage | None = None

    def prepare(self, character: Character, canvas: Canvas) -> None:
        """Build (or fetch from the cache) the mesh, binding, texture and background."""
        check_character(character)
        check_canvas(canvas)
        # The image alone does not make the puppet: the same picture with another mask or skeleton
        # is another puppet.
        key = (character.sha256, hashlib.sha256(np.packbits(character.mask).tobytes()
                                                + np.asarray(character.joints, np.float32).tobytes()).hexdigest())
        puppet = _cached(self._puppets, key, lambda: build_puppet(character, self.grid_divisions))
        self._stage = _cached(self._stages, (key, canvas), lambda: build_stage(puppet, character, canvas))

    def render_window(self, request: WindowRequest) -> WindowResult:
        """Frames (n, H, W, 3) uint8 and the drawn joints (n, 15, 2) canvas px."""
        if self._stage is None:
            raise RuntimeError("PuppetBackend.render_window called before prepare")
        stage, puppet = self._stage, self._stage.puppet

        # 1. Check inputs.
        check_request(request)
        orders = draw_orders(request)

        # 2. Pose the rig: per-bone maps, then the mesh and the joints they carry.
        targets = np.asarray(request.targets)[..., :2].astype(np.float64)
        transforms = bone_transforms(puppet.rest, targets, stage.canvas.scale)
        vertices = skin(puppet.vertices, puppet.binding, transforms)
        drawn = drawn_joints(vertices, puppet.triangles, *puppet.joint_anchors)

        # 3. Where every posed triangle reads the texture.
        to_source, drawable = source_affines(vertices[:, puppet.triangles], stage.source_triangles)

        # 4. Draw each frame back to front, a layer at a time, over the background.
        canvas = stage.canvas
        frames = np.empty((len(targets), canvas.height, canvas.width, 3), np.uint8)
        for i, order in enumerate(orders):
            frames[i] = stage.background
            for layer in (CAPS, *order):
                part = puppet.layer_slices[layer]
                keep = drawable[i, part]
                maps = rasterize_layer(vertices[i][puppet.triangles[part][keep]], to_source[i, part][keep],
                                       stage.texture.opaque, (canvas.width, canvas.height))
                if maps is not None:
                    draw_layer(frames[i], stage.texture, *maps)
        return WindowResult(frames=frames, drawn_joints=drawn.astype(np.float32))


def build_puppet(character: Character, grid_divisions: int) -> Puppet:
    """Mesh, binding and painted-out background of a character (checked by check_character)."""
    mask = character.mask.astype(bool)
    rest = character.joints[:, :2].astype(np.float64)
    region = mesh_region(mask)
    pins = {layer: rest[JOINT_LAYER == layer] for layer in range(len(LAYERS))}
    labels = part_labels(region, rest)
    mesh = build_part_meshes(region, labels, grid_divisions, pins, joint_caps(labels, rest))
    vertices, triangles = mesh.vertices, mesh.triangles
    binding = bind_parts(vertices, mesh.vertex_layer, triangles, region, rest)

    # Triangles grouped by layer, the caps last as a layer of their own; inside a layer down the
    # chain, so a forearm covers its upper arm.
    layer = np.where(mesh.triangle_cap, CAPS, binding.triangle_layer)
    order = np.lexsort((np.arange(len(layer)), binding.triangle_bone, layer))
    bounds = np.searchsorted(layer[order], np.arange(CAPS + 2))
    return Puppet(
        rest=rest,
        vertices=vertices,
        triangles=triangles[order],
        layer_slices=tuple(slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])),
        binding=dataclasses.replace(binding, triangle_bone=binding.triangle_bone[order]),
        joint_anchors=joint_anchors(rest, vertices, triangles[order], layer[order]),
        texture_mask=mask & region,
        background=remove_character(character.image, mask),
    )


def build_stage(puppet: Puppet, character: Character, canvas: Canvas) -> Stage:
    """Texture at the canvas's scale (never above the image's own) and the background on the canvas."""
    texture = make_texture(character.image, puppet.texture_mask, min(1.0, canvas.scale))
    linear, offset = texture.from_image[:, :2], texture.from_image[:, 2]
    source_triangles = puppet.vertices[puppet.triangles] @ linear.T + offset
    return Stage(puppet, canvas, texture, source_triangles, fit_background(puppet.background, canvas))


def draw_orders(request: WindowRequest) -> np.ndarray:
    """Layer indices (into LAYERS) per frame, back to front. (n, 5).

    The limbs come in request.layers' order; the torso goes in front of the first
    options["limbs_behind_torso"] of them (default 0: behind every limb).
    """
    limbs = np.asarray(request.layers, dtype=np.int64) + 1
    count = len(limbs)
    behind = np.broadcast_to(np.asarray(request.options.get(BEHIND_TORSO, 0), dtype=np.int64), (count,))
    slot = np.arange(len(LAYERS))[None, :]
    limb_at = np.minimum(slot - (slot > behind[:, None]), len(LIMBS) - 1)
    return np.where(slot == behind[:, None], 0, np.take_along_axis(limbs, limb_at, axis=1))


def check_character(character: Character) -> None:
    """Raise FarmError for a character the puppet cannot animate."""
    image, mask, joints = character.image, np.asarray(character.mask), np.asarray(character.joints)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FarmError("character image", f"has shape {image.shape} and type {image.dtype}",
                        "give an RGB image (H, W, 3) of uint8")
    if mask.shape != image.shape[:2]:
        raise FarmError("character mask", f"is {mask.shape[1]}x{mask.shape[0]} px but the image is "
                        f"{image.shape[1]}x{image.shape[0]}", "give a mask of the image's size with --character-mask")
    covered = float(np.count_nonzero(mask)) / mask.size
    if covered == 0:
        raise FarmError("character mask", "is empty: no pixel belongs to the character",
                        "give a mask with --character-mask or an image with a transparent background")
    if covered < MIN_MASK_FRACTION:
        raise FarmError("character mask", f"covers {100 * covered:.2f}% of the image; the puppet needs "
                        f"at least {100 * MIN_MASK_FRACTION:.0f}%",
                        "give a mask with --character-mask or crop the image closer to the character")
    if joints.shape != (len(JOINTS), 3) or not np.isfinite(joints[:, :2]).all():
        raise FarmError("character skeleton", f"has shape {joints.shape} or non-finite positions; "
                        f"the rig needs ({len(JOINTS)}, 3) finite joints",
                        "give a skeleton file with --character-skeleton")
    parent, child = BONES[TORSO_BONE]
    if np.linalg.norm(joints[child, :2] - joints[parent, :2]) < MIN_BONE_PX:
        raise FarmError("character skeleton", f"puts {JOINTS[parent]} and {JOINTS[child]} at the same place, "
                        "so the torso has no direction", "fix the skeleton so the neck is above the pelvis")


def check_canvas(canvas: Canvas) -> None:
    """Raise FarmError for a canvas the puppet cannot draw on."""
    if canvas.mode not in CANVAS_MODES:
        raise FarmError("canvas.mode", f"is {canvas.mode!r}, not one of: {', '.join(CANVAS_MODES)}",
                        f"use one of: {', '.join(CANVAS_MODES)}")
    if canvas.width < 1 or canvas.height < 1 or not (np.isfinite(canvas.scale) and canvas.scale > 0):
        raise FarmError("canvas", f"is {canvas.width}x{canvas.height} px at scale {canvas.scale}",
                        "give a positive size and scale")


def check_request(request: WindowRequest) -> None:
    """Raise FarmError for a window request that does not fit the contract."""
    count = request.end - request.start
    subject = f"shot {request.shot_id}"
    targets, layers = np.asarray(request.targets), np.asarray(request.layers)
    if count < 1 or targets.shape != (count, len(JOINTS), 3):
        raise FarmError(f"{subject}: targets", f"have shape {targets.shape} for frames "
                        f"[{request.start}, {request.end}); expected ({count}, {len(JOINTS)}, 3)")
    if not np.isfinite(targets[..., :2]).all():
        raise FarmError(f"{subject}: targets", "contain non-finite joint positions",
                        "fill missing joints before rendering (the retargeter should)")
    if layers.shape != (count, len(LIMBS)) or not (np.sort(layers, axis=1) == np.arange(len(LIMBS))).all():
        raise FarmError(f"{subject}: layers", f"must give every frame an order of the limbs 0..{len(LIMBS) - 1} "
                        f"({', '.join(LIMBS)}); got shape {layers.shape}")
    behind = np.asarray(request.options.get(BEHIND_TORSO, 0))
    if behind.shape not in ((), (count,)) or not np.issubdtype(behind.dtype, np.integer) \
            or behind.min() < 0 or behind.max() > len(LIMBS):
        raise FarmError(f"{subject}: options.{BEHIND_TORSO}",
                        f"must be an integer 0..{len(LIMBS)} or one per frame ({count})")


def _cached(cache: OrderedDict, key: Hashable, build: Callable[[], _T]) -> _T:
    """cache[key], built on a miss; the least recently used entry goes beyond CACHE_SIZE."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = build()
    if len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
    return value
