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
