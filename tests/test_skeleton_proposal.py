"""A drawing without a skeleton file: its 15 joints proposed from the mask's shape, measured against
the hand-placed AnimatedDrawings skeletons; shapes that are no standing humanoid are refused."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from farm.character import character_mask, read_skeleton
from farm.config import load_config
from farm.errors import FarmError
from farm.media.probe import load_image
from farm.propose import propose_skeleton
from farm.rig import JOINTS
from farm.shot.render import render_shot
from farm.shot.types import Shot
from tests.conftest import REPO
from tests.test_cli import assert_one_line_error, run_farm

MEDIA = REPO / "jobs" / "media"
# image, its hand-made skeleton, its mask
DRAWINGS = {
    "char1": ("childdrawing_char1.png", "childdrawing_char1_skeleton.yaml", "childdrawing_char1_mask.png"),
    "char3": ("childdrawing_char3_candycorn.png", "childdrawing_char3_skeleton.yaml", "childdrawing_char3_candycorn_mask.png"),
}


def joint_errors(drawing: str, *, mask_file: bool) -> np.ndarray:
    """Each proposed joint's distance to the hand-placed one, as a share of the character's height."""
    image, skeleton, mask = DRAWINGS[drawing]
    rgb, alpha = load_image(MEDIA / image)
    found, _ = character_mask(rgb, alpha, MEDIA / mask if mask_file else None, photo=False)
    rows = np.flatnonzero(found.any(axis=1))
    height = rows[-1] - rows[0] + 1
    proposed = propose_skeleton(found, image)
    hand_made = read_skeleton(MEDIA / skeleton, (rgb.shape[1], rgb.shape[0]))
    return np.linalg.norm(proposed[:, :2] - hand_made[:, :2], axis=1) / height


@pytest.mark.parametrize("mask_file", [True, False], ids=["mask_file", "paper_threshold"])
@pytest.mark.parametrize("drawing", sorted(DRAWINGS))
def test_proposed_joints_are_within_5_percent_of_the_height_of_the_hand_made_ones(drawing, mask_file):
    errors = joint_errors(drawing, mask_file=mask_file)
    # Measured: char1 3.3 % (mask file) and 3.5 % (paper), worst joints the shoulders at 8-9 %;
    # char3 1.6 % and 1.7 %, worst the head at 6 %.
    assert errors.mean() <= 0.05, errors.round(3)
    assert errors.max() <= 0.10, errors.round(3)


def test_a_mirrored_drawing_gets_the_mirrored_skeleton_with_the_sides_swapped():
    mask = DRAWINGS["char1"][2]
    found = load_image(MEDIA / mask)[0].max(axis=2) > 127
    width = found.shape[1]
    proposed, mirrored = propose_skeleton(found), propose_skeleton(found[:, ::-1])
    swapped = [JOINTS.index(n.replace("right", "?").replace("left", "right").replace("?", "left")) for n in JOINTS]
    back = mirrored[swapped, :2] * [-1, 1] + [width - 1, 0]
    height = np.ptp(np.flatnonzero(found.any(axis=1))) + 1
    assert np.linalg.norm(back - proposed[:, :2], axis=1).max() <= 0.03 * height


def pig_mask(shared_data) -> np.ndarray:
    """The pig cut out of its paper (its alpha channel is almost opaque everywhere, so not that)."""
    rgb, _ = load_image(shared_data / "childdrawing_pig_quadruped.png")
    mask, method = character_mask(rgb, None, None, photo=False)
    assert method == "threshold"
    return mask


def test_a_quadruped_is_refused_with_the_reason_and_the_fix(shared_data):
    with pytest.raises(FarmError, match="standing humanoid.*--character-skeleton"):
        propose_skeleton(pig_mask(shared_data), "pig.png")


def test_farm_skeleton_writes_a_yaml_that_loads_back_and_an_overlay(tmp_path):
    out = tmp_path / "char3.yaml"
    done = run_farm("skeleton", MEDIA / "childdrawing_char3_candycorn.png", "-o", out)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout and str(out.with_suffix(".png")) in done.stdout and "proposed" in done.stdout
    loaded = read_skeleton(out, (564, 547))
    rgb, _ = load_image(MEDIA / "childdrawing_char3_candycorn.png")
    expected = propose_skeleton(character_mask(rgb, None, None, photo=False)[0])
    assert np.abs(loaded[:, :2] - expected[:, :2]).max() <= 0.5  # written in whole pixels
    overlay = cv2.imread(str(out.with_suffix(".png")))
    assert overlay.shape == (547, 564, 3) and np.abs(overlay.astype(int) - rgb[..., ::-1]).max() > 100


def test_farm_skeleton_refuses_a_quadruped_in_one_line(tmp_path, shared_data):
    mask = tmp_path / "pig_mask.png"
    cv2.imwrite(str(mask), pig_mask(shared_data).astype(np.uint8) * 255)
    done = run_farm("skeleton", shared_data / "childdrawing_pig_quadruped.png", "--mask", mask, "-o", tmp_path / "pig.yaml")
    assert_one_line_error(done, "childdrawing_pig_quadruped.png", "standing humanoid", "--character-skeleton")
    assert not (tmp_path / "pig.yaml").exists()


def test_a_drawing_rendered_without_a_skeleton_file_records_the_proposal(tmp_path):
    cfg = load_config(["output.size=128", "output.pose_preview=false"])
    shot = Shot(motion=MEDIA / "gesture_asl_please.mkv", character=MEDIA / "childdrawing_char3_candycorn.png")
    result = render_shot(shot, cfg, tmp_path)
    assert result.status == "succeeded", result.error
    assert result.manifest["character"]["skeleton_source"] == "proposed"
    assert result.manifest["character"]["mask_method"] == "threshold"
