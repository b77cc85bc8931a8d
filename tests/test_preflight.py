"""farm.qa.preflight on real clips and photos: people count, framing, warnings."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from farm.pose.extract import PoseOptions, PoseSequence, detect_image_pose, extract_poses
from farm.qa.preflight import (
    FAST_MOTION_PER_FRAME,
    TINY_SUBJECT_RATIO,
    count_people,
    framing_class,
    others_seen,
    run_preflight,
    subject_size_and_speed,
    video_framing,
)
from farm.rig import JOINT_INDEX, from_mediapipe


@pytest.fixture(scope="module")
def asl(shared_data) -> PoseSequence:
    return extract_poses(shared_data / "gesture_asl_please.mkv")


def _image_joints(path) -> tuple[np.ndarray, int]:
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    body = detect_image_pose(rgb)
    return from_mediapipe(body[:, [0, 1, 3]]), rgb.shape[0]


BODY_ONLY = PoseOptions(hands=False, face=False)


def test_handshake_clip_has_two_people_and_says_whom_motion_follows(shared_data):
    path = shared_data / "multi_two_people_handshake.mp4"
    poses = extract_poses(path, options=BODY_ONLY)
    count, note = count_people(path, poses)
    assert count == 2
    assert note.startswith("2 people seen; motion is taken from the most prominent one")
    # The centre the note gives is the performer's on a sampled frame, as the tracker followed them.
    seen = others_seen(path)
    found = [index for index, *_ in seen.frames if poses.body[index, :, 3].max() > 0]
    assert found, "the tracker found the performer on no sampled frame"
    centres = [(poses.body[i, :, 0].clip(0, poses.width).min() + poses.body[i, :, 0].clip(0, poses.width).max())
               / 2 / poses.width for i in found]
    shown = float(note.split("x≈")[1].split("%")[0]) / 100
    assert min(abs(shown - centre) for centre in centres) <= 0.006, (note, centres)
    # Without the performer on those frames (a tracker that lost them), only the detectors count.
    lost = dataclasses.replace(poses, body=np.zeros_like(poses.body))
    assert seen.count(lost)[0] == max(max(len(people), len(faces)) for _, _, people, faces in seen.frames)


def test_dance_clip_has_one_person(shared_data):
    path = shared_data / "dance_fullbody_outdoor.mp4"
    assert count_people(path, extract_poses(path, options=BODY_ONLY)) == (1, "1 person seen")


def test_dance_video_is_full_body_and_asl_video_upper_body(shared_data, asl):
    dance = extract_poses(shared_data / "dance_fullbody_outdoor.mp4", start=0, stop=48)
    assert video_framing(dance.rig(), dance.height) == "full_body"
    assert video_framing(asl.rig(), asl.height) == "upper_body"


def test_photo_framings(shared_data):
    assert framing_class(*_image_joints(shared_data / "fullbody_photo_man.png")) == "full_body"
    assert framing_class(*_image_joints(shared_data / "halfbody_photo_woman.png")) == "upper_body"


def test_framing_of_head_and_shoulders_and_of_nobody():
    joints = np.zeros((15, 3), np.float32)
    assert framing_class(joints, 100) == "no_person"
    for name in ("head", "right_shoulder", "left_shoulder"):
        joints[JOINT_INDEX[name]] = (50, 60, 0.9)
    assert framing_class(joints, 100) == "close_up"
    # ankles below the bottom edge do not make a full body
    for name in ("right_hip", "left_hip", "right_ankle", "left_ankle"):
        joints[JOINT_INDEX[name]] = (50, 90 if "hip" in name else 130, 0.9)
    assert framing_class(joints, 100) == "upper_body"


def test_upper_body_video_with_full_body_character_warns_about_framing(shared_data, asl):
    joints, height = _image_joints(shared_data / "fullbody_photo_man.png")
    report = run_preflight(shared_data / "gesture_asl_please.mkv", asl, joints, height)
    assert (report.people_max, report.people_note) == (1, "1 person seen")
    assert (report.video_framing, report.image_framing, report.framing_match) == (
        "upper_body", "full_body", False)
    assert report.hands_visible_ratio >= 0.9
    assert len(report.warnings) == 1
    assert "upper_body" in report.warnings[0] and "full_body" in report.warnings[0]
    assert "use a reference whose framing matches the character image" in report.warnings[0]
    assert report.to_dict() == dataclasses.asdict(report)
    assert report.to_dict()["video_framing"] == "upper_body"


def test_missing_hands_and_missing_person_are_warned_about(shared_data, asl):
    blind = dataclasses.replace(asl, body=asl.body.copy(),
                                left_hand=np.zeros_like(asl.left_hand),
                                right_hand=np.zeros_like(asl.right_hand))
    blind.body[:30] = 0.0  # nobody on 30 of 73 frames
    report = run_preflight(shared_data / "gesture_asl_please.mkv", blind, None, None)
    assert report.image_framing is None and report.framing_match
    assert report.hands_visible_ratio == 0.0
    assert len(report.warnings) == 2
    assert report.warnings[0].startswith("hands are found on only 0% of frames")
    assert report.warnings[1].startswith("no person is found on 41% of frames")


def test_two_people_in_the_video_are_warned_about(shared_data):
    path = shared_data / "multi_two_people_handshake.mp4"
    seq = extract_poses(path, start=0, stop=8)
    report = run_preflight(path, seq, None, None)
    assert report.people_max == 2
    assert report.warnings[0].startswith("2 people seen")


def test_fast_low_frame_rate_dribble_warns_and_asl_does_not(shared_data, asl):
    dribble = extract_poses(shared_data / "fast_basketball_dribble.mp4", options=PoseOptions(hands=False, face=False))
    size, speed = subject_size_and_speed(dribble)
    assert speed > FAST_MOTION_PER_FRAME and 0.3 < size < 0.7
    report = run_preflight(shared_data / "fast_basketball_dribble.mp4", dribble, None, None)
    assert any("too fast" in w for w in report.warnings)
    size, speed = subject_size_and_speed(asl)
    assert speed < FAST_MOTION_PER_FRAME and size > 0.6


def test_tiny_performer_is_warned_about(shared_data, asl):
    small = dataclasses.replace(asl, height=asl.height * 8)  # same pixels in a frame 8x as tall
    report = run_preflight(shared_data / "gesture_asl_please.mkv", small, None, None)
    assert report.subject_height_ratio < TINY_SUBJECT_RATIO
    assert any("fills only" in w for w in report.warnings)
