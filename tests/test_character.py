"""The character: skeleton files in both formats, masks, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from farm.character import load_character, read_skeleton
from farm.errors import FarmError
from farm.rig import JOINTS
from tests.conftest import REPO

MEDIA = REPO / "jobs" / "media"
AD_SKELETON = MEDIA / "childdrawing_char1_skeleton.yaml"


def test_animated_drawings_skeleton_maps_onto_the_rig():
    joints = read_skeleton(AD_SKELETON, (508, 602))
    assert joints.shape == (15, 3) and (joints[:, 2] == 1).all()
    named = dict(zip(JOINTS, joints[:, :2].tolist()))
    # AnimatedDrawings: hip -> pelvis, torso -> neck, neck (on the nose) -> head, hand -> wrist, foot -> ankle.
    assert named["pelvis"] == [264, 397] and named["neck"] == [247, 232] and named["head"] == [231, 119]
    assert named["right_wrist"] == [46, 311] and named["left_ankle"] == [409, 549]


def test_farm_skeleton_format_and_a_resized_image(tmp_path):
    ad = read_skeleton(AD_SKELETON, (508, 602))
    doc = {"format": "farm-skeleton/1", "width": 508, "height": 602, "joints": {n: ad[i, :2].tolist() for i, n in enumerate(JOINTS)}}
    path = tmp_path / "skel.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert np.allclose(read_skeleton(path, (508, 602)), ad)
    assert np.allclose(read_skeleton(path, (254, 301))[:, :2], ad[:, :2] / 2)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("format: farm-skeleton/1\njoints: {pelvis: [1, 2]}\n", "missing joints"),
        ("just: words\n", "unknown skeleton format"),
        ("skeleton: [{name: hip}]\n", "needs `name` and `loc`"),
        ("a: [1, 2\n", "not a YAML skeleton file"),
    ],
)
def test_bad_skeleton_files_name_the_problem(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(FarmError, match=needle) as caught:
        read_skeleton(path, (100, 100))
    assert str(path) in str(caught.value)


def test_skeleton_for_another_image_shape_is_refused(tmp_path):
    with pytest.raises(FarmError, match="508x602"):
        read_skeleton(AD_SKELETON, (600, 600))


def test_drawing_on_paper_gets_a_threshold_mask_close_to_the_hand_made_one():
    character, info = load_character(MEDIA / "childdrawing_char1.png", skeleton_path=AD_SKELETON)
    assert info.mask_method == "threshold" and info.skeleton_source == "skeleton_file"
    given, _ = load_character(
        MEDIA / "childdrawing_char1.png", skeleton_path=AD_SKELETON, mask_path=MEDIA / "childdrawing_char1_mask.png"
    )
    iou = (character.mask & given.mask).sum() / (character.mask | given.mask).sum()
    assert iou > 0.85


def test_photo_character_is_detected_and_segmented(shared_data):
    character, info = load_character(shared_data / "fullbody_photo_man.png")
    assert info.skeleton_source == "detected" and info.mask_method == "pose_segmentation"
    assert (character.joints[:, 2] > 0.5).all()
    inside = character.mask[character.joints[:, 1].astype(int), character.joints[:, 0].astype(int)]
    assert inside.all()
    # Head above neck above pelvis above ankles.
    y = dict(zip(JOINTS, character.joints[:, 1]))
    assert y["head"] < y["neck"] < y["pelvis"] < y["left_ankle"]


def test_drawing_whose_shape_is_no_humanoid_is_a_clear_error(tmp_path):
    import cv2

    # A round mask: no head, hands or feet to propose a skeleton from, and mediapipe finds nobody.
    disk = tmp_path / "disk.png"
    cv2.imwrite(str(disk), cv2.circle(np.zeros((602, 508), np.uint8), (254, 301), 200, 255, -1))
    with pytest.raises(FarmError, match="childdrawing_char1.png.*0 limb-like extremities.*--character-skeleton"):
        load_character(MEDIA / "childdrawing_char1.png", mask_path=disk)


def test_empty_mask_file_is_refused(tmp_path):
    import cv2

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((602, 508), np.uint8))
    with pytest.raises(FarmError, match="blank.png.*covers only"):
        load_character(MEDIA / "childdrawing_char1.png", skeleton_path=AD_SKELETON, mask_path=blank)


def test_skeleton_file_on_a_busy_background_is_segmented_not_thresholded(tmp_path, shared_data):
    # An anime girl in front of a sky: stroke thresholding would cut out the sky with her.
    joints = {name: [180 + (i % 3) * 50, 120 + i * 30] for i, name in enumerate(JOINTS)}
    skeleton = tmp_path / "girl.yaml"
    skeleton.write_text(yaml.safe_dump({"format": "farm-skeleton/1", "joints": joints}))
    character, info = load_character(shared_data / "stylized_anime_fullbody_girl.png", skeleton_path=skeleton)
    assert info.mask_method in ("pose_segmentation", "selfie_segmentation")
    border = np.concatenate([character.mask[0], character.mask[-1], character.mask[:, 0], character.mask[:, -1]])
    assert border.mean() < 0.3 and 0.2 < character.mask.mean() < 0.6


# --- Character images as people upload them (issue 12) --------------------------------------------

def _write_rgba(path, rgba: np.ndarray):
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    return path


def _padded_beside(rgb: np.ndarray, strip: int) -> np.ndarray:
    """The picture on a wider canvas whose extra strip on the right is fully transparent."""
    height, width = rgb.shape[:2]
    rgba = np.zeros((height, width + strip, 4), np.uint8)
    rgba[:, :width, :3], rgba[:, :width, 3] = rgb, 255
    return rgba


def test_transparent_strip_beside_a_photo_is_padding_and_segmentation_takes_over(tmp_path, shared_data):
    # The alpha of this PNG covers 63% of its border: as a mask it was refused for swallowing the
    # background. It only pads the photo, so the person is segmented as in the photo alone.
    from farm.media.probe import load_image

    photo, _ = load_image(shared_data / "halfbody_photo_woman.png")
    padded = _write_rgba(tmp_path / "padded.png", _padded_beside(photo, 400))
    character, info = load_character(padded)
    alone, _ = load_character(shared_data / "halfbody_photo_woman.png")

    assert info.mask_method == "pose_segmentation" and info.detection == "full image"
    assert not character.mask[:, 1024:].any()
    on_photo = character.mask[:, :1024]
    assert (on_photo & alone.mask).sum() / (on_photo | alone.mask).sum() > 0.95
    # The same pose as in the photo alone, to within 2.5% of its size (mediapipe sees a wider image).
    seen = character.joints[:, 2] >= 0.5
    assert np.abs(character.joints[seen, :2] - alone.joints[seen, :2]).max() < 0.025 * 1024


def test_person_small_in_a_wide_scene_is_found_in_a_crop(tmp_path, shared_data):
    # A full-body photo standing in an empty room: mediapipe misses him in the whole image and
    # finds him in a crop; his joints and mask lie on him, not on the room.
    import cv2

    from farm.media.decode import iter_frames
    from farm.media.probe import load_image
    from farm.pose.extract import detect_image_pose

    room = cv2.resize(next(iter_frames(shared_data / "long_people_walk_in_one_by_one.mp4", start=0, stop=1)), (1152, 648))
    man, _ = load_image(shared_data / "fullbody_photo_man.png")
    x, y, w, h = 488, 357, 176, 259
    room[y:y + h, x:x + w] = cv2.resize(man, (w, h), interpolation=cv2.INTER_AREA)
    path = _write_rgba(tmp_path / "scene.png", np.dstack([room, np.full(room.shape[:2], 255, np.uint8)]))
    assert detect_image_pose(room) is None

    character, info = load_character(path)
    assert info.detection.startswith("crop") and info.mask_method == "pose_segmentation"
    joints = dict(zip(JOINTS, character.joints))
    assert all(x <= j[0] < x + w and y <= j[1] < y + h for j in joints.values())
    assert joints["head"][1] < y + 0.2 * h and min(joints["left_ankle"][1], joints["right_ankle"][1]) > y + 0.8 * h
    assert character.mask[y:y + h, x:x + w].sum() / character.mask.sum() > 0.95


def test_stylized_anime_girl_is_found_padded_square_and_segmented_there(shared_data):
    # Refused before as "no person found": mediapipe sees her once the image is padded square.
    character, info = load_character(shared_data / "stylized_anime_fullbody_girl.png")
    assert info.skeleton_source == "detected" and info.detection == "padded square"
    assert info.mask_method == "pose_segmentation" and info.to_dict()["detection"] == "padded square"
    y = dict(zip(JOINTS, character.joints[:, 1]))
    assert y["head"] < 200 < y["neck"] < y["pelvis"]  # her face is at y ≈ 150 in the 463x615 image
    seen = character.joints[character.joints[:, 2] >= 0.5]
    assert character.mask[seen[:, 1].astype(int), seen[:, 0].astype(int)].mean() > 0.9
    border = np.concatenate([character.mask[0], character.mask[-1], character.mask[:, 0], character.mask[:, -1]])
    assert border.mean() < 0.3 and 0.2 < character.mask.mean() < 0.6


def test_full_body_photo_stops_the_search_at_the_whole_image(shared_data):
    _, info = load_character(shared_data / "fullbody_photo_man.png")
    assert info.detection == "full image"


def test_refusal_names_every_mask_method_tried_and_why(tmp_path, shared_data):
    # An empty room, padded beside: nothing in it separates from the background.
    from farm.media.decode import iter_frames

    room = next(iter_frames(shared_data / "long_people_walk_in_one_by_one.mp4", start=0, stop=1))
    path = _write_rgba(tmp_path / "room.png", _padded_beside(room, 200))
    joints = {name: [300 + (i % 3) * 20, 50 + i * 20] for i, name in enumerate(JOINTS)}
    skeleton = tmp_path / "room.yaml"
    skeleton.write_text(yaml.safe_dump({"format": "farm-skeleton/1", "joints": joints}))
    with pytest.raises(FarmError) as caught:
        load_character(path, skeleton_path=skeleton)
    message = str(caught.value)
    assert message.startswith(f"{path}: could not separate the character from the background")
    assert "alpha: it is padding, not a cut-out" in message
    assert "pose_segmentation: covers only" in message and "selfie_segmentation: covers only" in message
    assert "--character-mask FILE" in message
