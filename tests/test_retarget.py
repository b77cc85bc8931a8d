import numpy as np
import pytest

from farm.character import read_skeleton
from farm.errors import FarmError
from farm.pose.retarget import limb_layers, retarget
from farm.rig import BONES, JOINT_INDEX, bone_lengths
from tests.conftest import REPO

CHAR_SIZE = (508, 602)


@pytest.fixture(scope="module")
def char1():
    return read_skeleton(REPO / "jobs/media/childdrawing_char1_skeleton.yaml", CHAR_SIZE)


def _performer(frames: int, *, legs_seen: bool = True) -> np.ndarray:
    """A performer twice the size of char1 with other proportions, waving the right arm."""
    rest = read_skeleton(REPO / "jobs/media/childdrawing_char1_skeleton.yaml", CHAR_SIZE)
    base = rest.copy()
    base[:, :2] = (rest[:, :2] - rest[0, :2]) * [1.6, 2.4] + [600, 500]
    out = np.repeat(base[None], frames, axis=0)
    for t in range(frames):
        angle = np.deg2rad(-90 + 60 * np.sin(t / 3))  # right forearm swings around the elbow
        elbow = out[t, JOINT_INDEX["right_elbow"], :2]
        length = np.linalg.norm(base[JOINT_INDEX["right_wrist"], :2] - base[JOINT_INDEX["right_elbow"], :2])
        out[t, JOINT_INDEX["right_wrist"], :2] = elbow + length * np.array([np.cos(angle), np.sin(angle)])
        out[t, :, 0] += 3 * t  # walks to the right
    if not legs_seen:
        for name in ("right_knee", "right_ankle", "left_knee", "left_ankle"):
            out[:, JOINT_INDEX[name], 2] = 0.0
    return out


def _angles(j):
    d = j[:, [c for _, c in BONES], :2] - j[:, [p for p, _ in BONES], :2]
    return np.arctan2(d[..., 1], d[..., 0])


def test_bones_take_performer_directions_and_character_lengths(char1):
    driving = _performer(20)
    moved = retarget(driving, (1280, 1280), char1, CHAR_SIZE, mode="image", motion_weight=1.0, anchor="auto", output_size=512)
    assert np.allclose(_angles(moved.targets), _angles(driving), atol=1e-5)
    expected = bone_lengths(char1) * moved.canvas.scale
    lengths = bone_lengths(moved.targets)
    # Foreshortening may shorten a bone, never lengthen it past the character's own length.
    assert np.all(lengths <= expected[None] * 1.0001)
    # Torso and head are never foreshortened here (shoulders are: the pair is equalised to the longer).
    assert np.allclose(lengths[:, :2], expected[None, :2], rtol=1e-4)
    assert moved.anchor == "feet"


def test_image_mode_keeps_character_feet_on_its_ground_and_moves_by_scaled_displacement(char1):
    driving = _performer(20)
    moved = retarget(driving, (1280, 1280), char1, CHAR_SIZE, mode="image", motion_weight=1.0, anchor="auto", output_size=512)
    scale = moved.canvas.scale
    ankles = [JOINT_INDEX["right_ankle"], JOINT_INDEX["left_ankle"]]
    assert moved.targets[0, ankles, 1].max() == pytest.approx(char1[ankles, 1].max() * scale, abs=1e-3)
    assert (moved.canvas.width, moved.canvas.height) == (432, 512)


def test_image_mode_moves_the_character_by_the_performers_displacement_at_its_own_size(char1):
    # A performer exactly twice the character's size walks 3 px right per frame (57 px in all).
    driving = np.repeat(char1[None], 20, axis=0).copy()
    driving[..., :2] = driving[..., :2] * 2 + [100, 50]
    driving[:, :, 0] += 3 * np.arange(20)[:, None]
    moved = retarget(driving, (1280, 1280), char1, CHAR_SIZE, mode="image", motion_weight=1.0, anchor="auto", output_size=512)
    shift = moved.targets[19, 0, 0] - moved.targets[0, 0, 0]
    # char1's left and right limbs differ a little; a performer's are taken as equal (the longer
    # one, the other being foreshortened), so the size ratio is 2 within a few percent.
    assert shift == pytest.approx(57 / 2 * moved.canvas.scale, rel=0.03)
    # Same pose as the character: its torso and head keep their rest shape exactly.
    core = [JOINT_INDEX["pelvis"], JOINT_INDEX["neck"], JOINT_INDEX["head"]]
    posed = moved.targets[0, core, :2] - moved.targets[0, core[0], :2]
    assert np.allclose(posed, (char1[core, :2] - char1[core[0], :2]) * moved.canvas.scale, atol=1e-3)


def test_limbs_the_video_does_not_show_keep_the_rest_pose(char1):
    driving = _performer(10, legs_seen=False)
    moved = retarget(driving, (1280, 1280), char1, CHAR_SIZE, mode="image", motion_weight=1.0, anchor="auto", output_size=512)
    legs = [k - 1 for k in (JOINT_INDEX["right_knee"], JOINT_INDEX["right_ankle"], JOINT_INDEX["left_knee"], JOINT_INDEX["left_ankle"])]
    rest = _angles(char1[None])[0]
    assert np.allclose(_angles(moved.targets)[:, legs], rest[legs], atol=1e-6)
    assert moved.anchor == "neck"
    assert not moved.driven[legs].any()


def test_motion_weight_zero_keeps_the_character_still(char1):
    moved = retarget(_performer(10), (1280, 1280), char1, CHAR_SIZE, mode="image", motion_weight=0.0, anchor="auto", output_size=512)
    expected = char1[:, :2] * moved.canvas.scale
    assert np.allclose(moved.targets[..., :2], expected[None], atol=1e-3)


def test_video_mode_puts_the_character_where_the_performer_stands(char1):
    driving = _performer(12)
    moved = retarget(driving, (1280, 720), char1, CHAR_SIZE, mode="video", motion_weight=1.0, anchor="feet", output_size=640)
    fit = 640 / 1280
    assert (moved.canvas.width, moved.canvas.height) == (640, 360)
    ankles = [JOINT_INDEX["right_ankle"], JOINT_INDEX["left_ankle"]]
    assert np.allclose(moved.targets[:, ankles, 1].max(axis=1), driving[:, ankles, 1].max(axis=1) * fit, atol=1e-3)
    assert np.allclose(moved.targets[:, 0, 0], driving[:, 0, 0] * fit, atol=1e-3)
    # Performer's torso is 2.4x the character's; in video mode the character takes the performer's size.
    torso = bone_lengths(moved.targets)[0, 0]
    assert torso == pytest.approx(bone_lengths(driving)[0, 0] * fit, rel=0.2)


def test_no_person_in_video_is_a_clear_error(char1):
    driving = np.zeros((5, 15, 3), np.float32)
    with pytest.raises(FarmError, match="no person"):
        retarget(driving, (640, 480), char1, CHAR_SIZE, mode="image", motion_weight=1.0, anchor="auto", output_size=512)


def test_limb_layers_put_the_closest_limb_last():
    body = np.zeros((2, 33, 4), np.float32)
    body[0, [13, 15], 2] = -0.5  # left arm toward the camera
    body[1, [26, 28], 2] = -0.8  # right leg toward the camera
    layers, behind = limb_layers(body)
    assert layers[0].tolist() == [2, 3, 0, 1]  # legs first; the left arm, nearer, last
    assert layers[1].tolist() == [3, 2, 0, 1]  # the right leg is nearer than the left
    assert behind.tolist() == [2, 2]  # the legs go behind the torso, the arms in front


def test_a_far_arm_in_profile_goes_behind_the_torso():
    body = np.zeros((1, 33, 4), np.float32)
    body[..., 3] = 1.0
    body[0, [11, 12], 1] = 100.0  # shoulders
    body[0, [23, 24], 1] = 300.0  # hips: torso length 200 px
    body[0, [14, 16], 2] = 150.0  # right arm 150 px behind the torso (> 0.5 torso lengths)
    body[0, [13, 15], 2] = -80.0  # left arm in front
    layers, behind = limb_layers(body)
    assert layers[0, 2] == 0 and behind.tolist() == [3]  # both legs and the far right arm


def test_an_arm_swinging_through_the_far_side_of_its_rest_direction_does_not_pop_at_low_weight(char1):
    # The right upper arm sweeps 120° around the shoulder, through the direction opposite its rest
    # direction, where the turn from rest wraps from +180° to -180°.
    driving = _performer(40)
    shoulder, elbow, wrist = (JOINT_INDEX[n] for n in ("right_shoulder", "right_elbow", "right_wrist"))
    rest = np.arctan2(*(char1[elbow, 1::-1] - char1[shoulder, 1::-1]))
    for t in range(40):
        a = rest + np.pi + np.deg2rad(-60 + 3 * t)
        arm = driving[t, elbow, :2] - driving[t, shoulder, :2]
        driving[t, elbow, :2] = driving[t, shoulder, :2] + np.linalg.norm(arm) * np.array([np.cos(a), np.sin(a)])
        driving[t, wrist, :2] = driving[t, elbow, :2] + np.linalg.norm(arm) * np.array([np.cos(a), np.sin(a)])
    moved = retarget(driving, (1280, 1280), char1, CHAR_SIZE, mode="image", motion_weight=0.3, anchor="auto", output_size=512)
    step = np.abs(np.diff(np.unwrap(_angles(moved.targets)[:, elbow - 1])))
    assert step.max() < np.deg2rad(0.3 * 3 + 0.5)  # 0.3 of the performer's 3° a frame; no jump of 0.3 * 360°


def test_the_head_tilts_off_the_neck_at_most_as_far_as_a_neck_bends(char1):
    # The performer looks down and away: the nose swings 80° off the neck line and back.
    driving = _performer(30)
    neck, head = JOINT_INDEX["neck"], JOINT_INDEX["head"]
    for t in range(30):
        a = np.arctan2(*(driving[t, head, 1::-1] - driving[t, neck, 1::-1])) + np.deg2rad(80 * np.sin(np.pi * t / 29))
        r = np.linalg.norm(driving[t, head, :2] - driving[t, neck, :2])
        driving[t, head, :2] = driving[t, neck, :2] + r * np.array([np.cos(a), np.sin(a)])
    moved = retarget(driving, (1280, 1280), char1, CHAR_SIZE, mode="image", motion_weight=1.0, anchor="auto", output_size=512)
    angles, rest = _angles(moved.targets), _angles(char1[None])[0]
    tilt = np.rad2deg(np.angle(np.exp(1j * (angles[:, 1] - angles[:, 0] - (rest[1] - rest[0])))))
    assert np.abs(tilt).max() == pytest.approx(35.0, abs=0.01)  # followed up to the limit, then held there
    assert np.abs(tilt[:4]).max() < 35.0  # small tilts are the performer's own


def _chest_up(frames: int) -> np.ndarray:
    """_performer cut off at the chest: hips, knees and ankles never seen; the head tilts."""
    driving = _performer(frames)
    for name in ("pelvis", "right_hip", "left_hip", "right_knee", "right_ankle", "left_knee", "left_ankle"):
        driving[:, JOINT_INDEX[name], 2] = 0.0
    neck, head = JOINT_INDEX["neck"], JOINT_INDEX["head"]
    length = np.linalg.norm(driving[0, head, :2] - driving[0, neck, :2])
    tilt = np.deg2rad(-90 + 25 * np.sin(np.arange(frames) / 2))  # head tilts 25 degrees either way
    driving[:, head, :2] = driving[:, neck, :2] + length * np.stack([np.cos(tilt), np.sin(tilt)], axis=1)
    return driving


@pytest.mark.parametrize("mode", ["image", "video"])
def test_a_clip_without_hips_drives_head_and_arms_from_the_neck(char1, mode):
    driving = _chest_up(20)
    moved = retarget(driving, (1280, 1280), char1, CHAR_SIZE, mode=mode, motion_weight=1.0, anchor="auto", output_size=512)
    assert moved.root == "neck" and moved.anchor == "neck"
    head, right_forearm = JOINT_INDEX["head"] - 1, JOINT_INDEX["right_wrist"] - 1
    # Head tilt and the waving forearm follow the performer exactly; the torso keeps its rest angle.
    assert np.allclose(_angles(moved.targets)[:, [head, right_forearm]], _angles(driving)[:, [head, right_forearm]], atol=1e-5)
    assert np.allclose(_angles(moved.targets)[:, 0], _angles(char1[None])[0, 0], atol=1e-6)
    assert not moved.driven[0] and moved.driven[head]
    neck = JOINT_INDEX["neck"]
    if mode == "video":  # the neck is where the performer's is (3 px right per frame, at fit 0.4)
        assert np.allclose(moved.targets[:, neck, :2], driving[:, neck, :2] * 512 / 1280, atol=1e-3)
    else:  # the neck starts at the character's own and moves by the performer's scaled displacement
        assert np.allclose(moved.targets[0, neck, :2], char1[neck, :2] * moved.canvas.scale, atol=1e-3)
        assert moved.targets[19, neck, 0] - moved.targets[0, neck, 0] > 0


def test_no_person_is_said_only_when_there_is_none(char1):
    head_only = np.zeros((5, 15, 3), np.float32)
    head_only[:, JOINT_INDEX["head"]] = [320, 100, 0.9]
    with pytest.raises(FarmError, match="neither the hips nor both shoulders") as err:
        retarget(head_only, (640, 480), char1, CHAR_SIZE, mode="image", motion_weight=1.0, anchor="auto", output_size=512)
    assert "no person" not in str(err.value)


def test_joints_outside_the_characters_image_get_no_confidence(char1):
    # char1 cut off at the hips: its knees and ankles lie below the bottom of a 508x300 image.
    cropped = char1.copy()
    size = (CHAR_SIZE[0], int(char1[JOINT_INDEX["pelvis"], 1]) + 5)
    moved = retarget(_performer(10), (1280, 1280), cropped, size, mode="image", motion_weight=1.0, anchor="auto", output_size=512)
    legs = [JOINT_INDEX[n] for n in ("right_knee", "right_ankle", "left_knee", "left_ankle")]
    assert (moved.targets[:, legs, 2] == 0).all()  # not drawn, not measured: no leg grown from nothing
    assert (moved.targets[:, JOINT_INDEX["right_wrist"], 2] > 0).all() and moved.anchor == "neck"
