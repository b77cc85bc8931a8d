"""The puppet backend on real AnimatedDrawings characters: joints land on their targets, textures
travel with their limbs, layering, background, determinism, bad input."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from farm.backends.base import WindowRequest
from farm.backends.puppet import PuppetBackend
from farm.backends.puppet.backend import build_puppet
from farm.backends.puppet.raster import NOWHERE, fit_background, rasterize_layer, remove_character, source_affines
from farm.backends.puppet.skinning import bone_transforms, skin
from farm.errors import FarmError
from farm.rig import ANIMATED_DRAWINGS_NAMES, JOINT_INDEX, JOINTS, PARENTS
from farm.types import Canvas, Character

RIGHT_ARM_FIRST = np.array([0, 1, 2, 3])  # right_arm at the back of the limbs
RIGHT_ARM_LAST = np.array([1, 2, 3, 0])  # right_arm at the front
LIMB_ROOTS = tuple(JOINT_INDEX[name] for name in ("right_shoulder", "left_shoulder", "right_hip", "left_hip"))


def load_character(folder: Path, image: str, mask: str, skeleton: str) -> Character:
    """A Character from an AnimatedDrawings texture, mask and char_cfg skeleton."""
    bgr = cv2.imread(str(folder / image), cv2.IMREAD_COLOR)
    mask_bits = cv2.imread(str(folder / mask), cv2.IMREAD_GRAYSCALE) > 127
    joints = np.zeros((len(PARENTS), 3), np.float32)
    joints[:, 2] = 1.0
    for entry in yaml.safe_load((folder / skeleton).read_text())["skeleton"]:
        if entry["name"] in ANIMATED_DRAWINGS_NAMES:
            joints[JOINT_INDEX[ANIMATED_DRAWINGS_NAMES[entry["name"]]], :2] = entry["loc"]
    digest = hashlib.sha256((folder / image).read_bytes() + (folder / mask).read_bytes()).hexdigest()
    return Character(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), mask_bits, joints, "skeleton_file", digest)


@pytest.fixture(scope="module")
def char1(shared_data: Path) -> Character:
    return load_character(shared_data, "childdrawing_char1.png", "childdrawing_char1_mask.png",
                          "childdrawing_char1_skeleton.yaml")


@pytest.fixture(scope="module")
def candycorn(shared_data: Path) -> Character:
    return load_character(shared_data, "childdrawing_char3_candycorn.png", "childdrawing_char3_candycorn_mask.png",
                          "childdrawing_char3_skeleton.yaml")


def image_canvas(character: Character, scale: float = 1.0) -> Canvas:
    """The character's own picture at `scale`, padded to even sides."""
    height, width = (round(side * scale) for side in character.mask.shape)
    return Canvas(width=width + width % 2, height=height + height % 2, scale=scale, mode="image")


def turned(joints: np.ndarray, turns: dict[str, float]) -> np.ndarray:
    """Forward kinematics on the rig: each named joint's subtree turns by the given degrees about
    that joint (clockwise on screen, y down), in rig order. joints: (15, >=2)."""
    out = np.array(joints, np.float64)
    for name, degrees in sorted(turns.items(), key=lambda item: JOINT_INDEX[item[0]]):
        pivot = JOINT_INDEX[name]
        subtree = {pivot}
        for k in range(pivot + 1, len(PARENTS)):
            if PARENTS[k] in subtree:
                subtree.add(k)
        subtree.discard(pivot)
        a = np.deg2rad(degrees)
        rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        moved = sorted(subtree)
        out[moved, :2] = out[pivot, :2] + (out[moved, :2] - out[pivot, :2]) @ rotation.T
    return out


def targets_of(poses: list[np.ndarray], scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """(n, 15, 3) float32 canvas-px targets, confidence 1."""
    xy = np.stack([p[:, :2] for p in poses]) * scale + np.asarray(shift)
    return np.concatenate([xy, np.ones(xy.shape[:2] + (1,))], axis=-1).astype(np.float32)


def request(targets: np.ndarray, layers=RIGHT_ARM_LAST, **options) -> WindowRequest:
    n = len(targets)
    return WindowRequest("shot0", 0, n, targets, np.tile(layers, (n, 1)), options=options)


def render(character: Character, canvas: Canvas, targets: np.ndarray, **kwargs):
    backend = PuppetBackend()
    backend.prepare(character, canvas)
    return backend.render_window(request(targets, **kwargs))


def motion(rest: np.ndarray, frames: int = 16) -> list[np.ndarray]:
    """Raise the right arm 90° and bend its elbow, swing the left arm, kick the right leg, bend
    the left knee, lean the whole body and walk the pelvis; the left forearm foreshortens to 60%."""
    poses = []
    for t in np.linspace(0.0, 1.0, frames):
        pose = turned(rest, {"pelvis": 10 * t, "right_shoulder": 90 * t, "right_elbow": 45 * t,
                             "left_shoulder": -60 * np.sin(3 * t), "right_hip": 40 * t, "left_knee": -35 * t})
        elbow, wrist = JOINT_INDEX["left_elbow"], JOINT_INDEX["left_wrist"]
        pose[wrist, :2] = pose[elbow, :2] + (1.0 - 0.4 * t) * (pose[wrist, :2] - pose[elbow, :2])
        pose[:, :2] += [25 * t, -15 * t]
        poses.append(pose)
    return poses


def bone_points(character: Character, parent: str, child: str, start: float, stop: float,
                radius: float) -> np.ndarray:
    """Integer (N, 2) x, y of mask pixels (3-px eroded) within `radius` px of the part of the bone
    parent -> child between fractions start and stop of its length."""
    mask = cv2.erode(character.mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    rows, cols = np.nonzero(mask)
    points = np.stack([cols, rows], axis=1)
    a = character.joints[JOINT_INDEX[parent], :2].astype(np.float64)
    b = character.joints[JOINT_INDEX[child], :2].astype(np.float64)
    t = ((points - a) @ (b - a)) / ((b - a) @ (b - a))
    off = np.linalg.norm(points - a - t[:, None] * (b - a), axis=1)
    return points[(t >= start) & (t <= stop) & (off <= radius)]


def turn_points(points: np.ndarray, pivot: np.ndarray, degrees: int) -> np.ndarray:
    """Integer points turned by a multiple of 90° about an integer pivot (exact, no resampling)."""
    a = np.deg2rad(degrees)
    rotation = np.round([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).astype(np.int64)
    return pivot + (points - pivot) @ rotation.T


def test_drawn_joints_match_targets_within_2px_on_every_frame(char1, candycorn):
    for character in (char1, candycorn):
        canvas = image_canvas(character, 0.75)
        targets = targets_of(motion(character.joints), scale=0.75)
        result = render(character, canvas, targets)
        assert result.frames.shape == (16, canvas.height, canvas.width, 3)
        assert result.frames.dtype == np.uint8
        assert result.drawn_joints.shape == (16, 15, 2)
        error = np.linalg.norm(result.drawn_joints - targets[..., :2], axis=-1)
        assert error.max() <= 2.0, error.max(axis=1)


def test_skinned_mesh_puts_each_joint_near_its_target(char1, candycorn):
    # drawn_joints come from the bone maps; the mesh between two bones blends them (LBS), which
    # pulls the root of a limb (shoulder, hip) inward by a few px when the limb turns far from the
    # torso (4.5 px at 90°). Pin that it stays a few px there and within 2 px everywhere else.
    for character in (char1, candycorn):
        puppet = build_puppet(character, 40)
        targets = targets_of(motion(character.joints))[..., :2].astype(np.float64)
        vertices = skin(puppet.vertices, puppet.binding, bone_transforms(puppet.rest, targets, 1.0))
        corners = puppet.vertices[puppet.triangles]
        for joint, rest in enumerate(puppet.rest):
            weights = barycentric(corners, rest)
            inside = np.flatnonzero((weights >= -1e-9).all(axis=1))
            assert len(inside), f"joint {joint} is outside the mesh"
            triangle = inside[0]
            carried = np.einsum("k,nkd->nd", weights[triangle], vertices[:, puppet.triangles[triangle]])
            error = np.linalg.norm(carried - targets[:, joint], axis=-1)
            assert error.max() <= 5.0, (joint, error.max())
            if joint not in LIMB_ROOTS:
                assert error.max() <= 2.0, (joint, error.max())


def barycentric(triangles: np.ndarray, point: np.ndarray) -> np.ndarray:
    """(T, 3) barycentric coordinates of a point in triangles (T, 3, 2)."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    cross = lambda u, v: u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    area = cross(b - a, c - a)
    wb, wc = cross(point - a, c - a) / area, cross(b - a, point - a) / area
    return np.stack([1 - wb - wc, wb, wc], axis=1)


def test_rest_pose_reproduces_the_character_inside_its_mask(char1, candycorn):
    for character in (char1, candycorn):
        height, width = character.mask.shape
        frame = render(character, image_canvas(character), targets_of([character.joints])).frames[0]
        error = np.abs(frame[:height, :width].astype(int) - character.image.astype(int)).mean(axis=-1)
        assert error[character.mask].mean() < 1.0

        half = image_canvas(character, 0.5)
        frame = render(character, half, targets_of([character.joints], scale=0.5)).frames[0]
        size = (round(width * 0.5), round(height * 0.5))
        expected = cv2.resize(character.image, size, interpolation=cv2.INTER_AREA).astype(int)
        inside = cv2.resize(character.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        error = np.abs(frame[:size[1], :size[0]].astype(int) - expected).mean(axis=-1)
        assert error[inside].mean() < 4.0


def test_mesh_covers_the_mask(char1, candycorn):
    for character in (char1, candycorn):
        puppet = build_puppet(character, 40)  # the meshes of all parts, as rendering uses them
        height, width = character.mask.shape
        corners = puppet.vertices[puppet.triangles]
        to_source, _ = source_affines(corners, corners)
        origin, map_x, _ = rasterize_layer(corners, to_source, np.ones((height, width), bool), (width, height))
        covered = np.zeros((height, width), bool)
        covered[origin[1]:origin[1] + map_x.shape[0], origin[0]:origin[0] + map_x.shape[1]] = map_x != NOWHERE
        assert covered[character.mask].mean() >= 0.97


def test_raised_forearm_keeps_its_texture_colour(candycorn):
    shoulder = candycorn.joints[JOINT_INDEX["right_shoulder"], :2].astype(np.int64)
    pose = turned(candycorn.joints, {"right_shoulder": 90})
    frame = render(candycorn, image_canvas(candycorn), targets_of([pose])).frames[0]

    forearm = bone_points(candycorn, "right_elbow", "right_wrist", 0.3, 0.9, 6)
    assert len(forearm) > 200
    raised = turn_points(forearm, shoulder, 90)
    drawn = frame[raised[:, 1], raised[:, 0]].astype(float)
    texture = candycorn.image[forearm[:, 1], forearm[:, 0]].astype(float)
    assert np.abs(drawn.mean(axis=0) - texture.mean(axis=0)).max() < 3.0
    assert np.abs(drawn - texture).mean() < 3.0


def test_no_ghost_of_the_rest_arm_after_it_moves(candycorn):
    canvas = image_canvas(candycorn)
    pose = turned(candycorn.joints, {"right_shoulder": 90})
    frames = render(candycorn, canvas, targets_of([pose] * 3)).frames
    background = fit_background(remove_character(candycorn.image, candycorn.mask), canvas).astype(float)

    rest_arm = bone_points(candycorn, "right_elbow", "right_wrist", 0.2, 1.0, 8)
    arm_colour = candycorn.image[rest_arm[:, 1], rest_arm[:, 0]].astype(float)
    for frame in frames:
        shown = frame[rest_arm[:, 1], rest_arm[:, 0]].astype(float)
        assert np.abs(shown - background[rest_arm[:, 1], rest_arm[:, 0]]).mean() < 2.0
        assert np.abs(shown - arm_colour).mean() > 40.0


def test_arm_layered_in_front_shows_arm_and_behind_shows_torso(candycorn):
    # Fold the right forearm back over the chest: turned 180° about the elbow, so canvas pixel p
    # shows the forearm texel 2 * elbow - p (exact, integers) or the torso texel p.
    elbow = candycorn.joints[JOINT_INDEX["right_elbow"], :2].astype(np.int64)
    pose = turned(candycorn.joints, {"right_elbow": 180})
    targets = targets_of([pose])

    forearm = bone_points(candycorn, "right_elbow", "right_wrist", 0.3, 1.3, 10)
    folded = turn_points(forearm, elbow, 180)
    # Chest pixels: inside the body, well clear of the rest right arm.
    body = cv2.erode(candycorn.mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    arm = np.zeros_like(body, np.uint8)
    for parent, child in (("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist")):
        ends = [tuple(int(v) for v in candycorn.joints[JOINT_INDEX[name], :2]) for name in (parent, child)]
        cv2.line(arm, *ends, 1, thickness=60)
    height, width = body.shape
    on_canvas = (folded[:, 0] >= 0) & (folded[:, 0] < width) & (folded[:, 1] >= 0) & (folded[:, 1] < height)
    folded, forearm = folded[on_canvas], forearm[on_canvas]
    over_torso = body[folded[:, 1], folded[:, 0]] & ~arm[folded[:, 1], folded[:, 0]].astype(bool)
    arm_texel = candycorn.image[forearm[over_torso, 1], forearm[over_torso, 0]].astype(int)
    folded = folded[over_torso]
    torso_texel = candycorn.image[folded[:, 1], folded[:, 0]].astype(int)
    telling = np.abs(arm_texel - torso_texel).sum(axis=1) > 90
    assert telling.sum() > 100

    canvas = image_canvas(candycorn)
    in_front = render(candycorn, canvas, targets, layers=RIGHT_ARM_LAST).frames[0]
    behind = render(candycorn, canvas, targets, layers=RIGHT_ARM_FIRST, limbs_behind_torso=1).frames[0]
    for frame, expected, other in ((in_front, arm_texel, torso_texel), (behind, torso_texel, arm_texel)):
        shown = frame[folded[:, 1], folded[:, 0]].astype(int)
        closer = np.abs(shown - expected).sum(axis=1) < np.abs(shown - other).sum(axis=1)
        assert closer[telling].mean() > 0.95


def test_same_request_gives_identical_bytes(char1):
    canvas = image_canvas(char1, 0.6)
    targets = targets_of(motion(char1.joints, 8), scale=0.6)
    backend = PuppetBackend()
    backend.prepare(char1, canvas)
    first = backend.render_window(request(targets))
    again = backend.render_window(request(targets))
    fresh = render(char1, canvas, targets)
    assert first.frames.tobytes() == again.frames.tobytes() == fresh.frames.tobytes()
    assert first.drawn_joints.tobytes() == fresh.drawn_joints.tobytes()


def test_video_canvas_is_covered_by_the_background(char1):
    canvas = Canvas(width=512, height=288, scale=0.4, mode="video")
    targets = targets_of([char1.joints] * 2, scale=0.4, shift=(150, 20))
    frames = render(char1, canvas, targets).frames
    background = fit_background(remove_character(char1.image, char1.mask), canvas)
    assert frames.shape == (2, 288, 512, 3)
    # The painted-out paper fills the frame: no black borders left by the cover crop.
    assert background.min() > 60
    # The character's purple outline is drawn where the targets put its head, not in the background.
    head = np.round(targets[0, JOINT_INDEX["head"], :2]).astype(int)
    window = (slice(head[1] - 25, head[1] + 25), slice(head[0] - 25, head[0] + 25))
    assert frames[0][window].min() < 100 < background[window].min()
    far = (slice(0, 40), slice(0, 40))
    assert np.abs(frames[0][far].astype(int) - background[far]).max() <= 1


def test_empty_or_tiny_mask_is_refused(char1):
    backend = PuppetBackend()
    empty = np.zeros_like(char1.mask)
    tiny = np.zeros_like(char1.mask)
    tiny[100:110, 100:110] = True
    for mask, words in ((empty, "empty"), (tiny, "covers 0.03%")):
        character = Character(char1.image, mask, char1.joints, "skeleton_file", "x")
        with pytest.raises(FarmError, match=words) as caught:
            backend.prepare(character, image_canvas(char1))
        assert caught.value.subject == "character mask"
        assert "--character-mask" in caught.value.fix


def test_unknown_deformer_names_the_setting_and_the_choices():
    with pytest.raises(FarmError) as caught:
        PuppetBackend(deformer="arap")
    assert caught.value.subject == "backend.deformer"
    assert "lbs" in str(caught.value)


def test_targets_of_the_wrong_shape_are_refused(char1):
    backend = PuppetBackend()
    backend.prepare(char1, image_canvas(char1))
    bad = WindowRequest("shot7", 10, 14, np.zeros((3, 15, 3), np.float32), np.tile(np.arange(4), (4, 1)))
    with pytest.raises(FarmError, match="shot shot7: targets"):
        backend.render_window(bad)
    layers = WindowRequest("shot7", 0, 2, targets_of([char1.joints] * 2), np.array([[0, 1, 2, 2], [0, 1, 2, 3]]))
    with pytest.raises(FarmError, match="layers"):
        backend.render_window(layers)


def test_front_triangle_gives_way_where_its_texture_is_transparent():
    # Two triangles over the same pixels; the later one is in front. Where the front one would read
    # a transparent texel (its rim), the one behind shows instead of a hole.
    corners = np.array([[10.0, 10.0], [40.0, 10.0], [10.0, 40.0]])
    posed = np.stack([corners, corners])
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    shifted = identity + [[0.0, 0.0, 50.0], [0.0, 0.0, 0.0]]
    to_source = np.stack([identity, shifted])
    for opaque_half, expected_shift in ((slice(0, 50), 0.0), (slice(50, 100), 50.0)):
        opaque = np.zeros((100, 100), bool)
        opaque[:, opaque_half] = True
        origin, map_x, _ = rasterize_layer(posed, to_source, opaque, (100, 100))
        covered = map_x != NOWHERE
        columns = origin[0] + np.nonzero(covered)[1]
        assert covered.sum() > 400
        np.testing.assert_allclose(map_x[covered], columns + expected_shift)


def test_same_image_with_another_skeleton_is_another_puppet(char1):
    backend = PuppetBackend()
    canvas = image_canvas(char1)
    backend.prepare(char1, canvas)
    first = backend._stage.puppet
    moved = Character(image=char1.image, mask=char1.mask, joints=char1.joints + [5, 0, 0], source=char1.source, sha256=char1.sha256)
    backend.prepare(moved, canvas)
    assert backend._stage.puppet is not first
    assert np.allclose(backend._stage.puppet.rest, moved.joints[:, :2])


def test_half_body_character_without_legs_renders(char1):
    # Only the top half of the drawing: no leg has a single pixel, so the leg layers are empty.
    mask = char1.mask.copy()
    mask[int(char1.joints[JOINT_INDEX["pelvis"], 1]) - 10 :] = False
    top = Character(image=char1.image, mask=mask, joints=char1.joints, source=char1.source, sha256=char1.sha256 + "top")
    result = render(top, image_canvas(top), targets_of(motion(top.joints)))
    assert result.frames.shape[0] == 16 and result.frames.std() > 10
    assert np.isfinite(result.drawn_joints).all()


@pytest.mark.parametrize("degrees", [40, 70])
def test_limbs_turning_at_the_shoulders_and_hips_leave_no_notch(char1, candycorn, degrees):
    """Near a limb's root joint, every pixel of the character is still drawn by some layer when the
    limb turns (the joint caps): none shows the bare painted-out background."""
    for character in (char1, candycorn):
        canvas = image_canvas(character)
        height, width = character.mask.shape
        background = fit_background(remove_character(character.image, character.mask), canvas)[:height, :width]
        pose = turned(character.joints, {"right_shoulder": degrees, "left_shoulder": -degrees,
                                         "right_hip": degrees / 2, "left_hip": -degrees / 2})
        frame = render(character, canvas, targets_of([pose])).frames[0][:height, :width]
        bare = (frame == background).all(axis=2)
        body = cv2.erode(character.mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        rows, cols = np.mgrid[:height, :width]
        for root, first in zip(LIMB_ROOTS, (JOINT_INDEX[n] for n in ("right_elbow", "left_elbow", "right_knee", "left_knee"))):
            centre = character.joints[root, :2]
            radius = 0.3 * np.linalg.norm(character.joints[first, :2] - centre)
            near = body & ((cols - centre[0]) ** 2 + (rows - centre[1]) ** 2 <= radius**2)
            assert (bare & near).sum() <= 0.02 * near.sum(), (JOINTS[root], int((bare & near).sum()), int(near.sum()))
