"""farm.pose: landmarks from real clips, One-Euro smoothing, Parquet, OpenPose JSON, drawing."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from farm.errors import FarmError
from farm.pose.draw import BODY_COLOURS, draw_pose_frame, draw_rig_frame
from farm.pose.extract import (
    PoseOptions,
    PoseSequence,
    detect_image_pose,
    extract_poses,
)
from farm.pose.openpose import to_openpose_frames, write_openpose_json
from farm.pose.smooth import one_euro
from farm.pose.store import (
    read_parquet,
    read_rig_parquet,
    write_parquet,
    write_rig_parquet,
)
from farm.rig import JOINT_INDEX

DANCE_FRAMES, ASL_FRAMES = 194, 73


@pytest.fixture(scope="module")
def dance(shared_data) -> PoseSequence:
    return extract_poses(shared_data / "dance_fullbody_outdoor.mp4")


@pytest.fixture(scope="module")
def asl(shared_data) -> PoseSequence:
    return extract_poses(shared_data / "gesture_asl_please.mkv")


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


# --- extraction -------------------------------------------------------------------------------

def test_dance_clip_has_a_person_on_nearly_every_frame(dance):
    assert len(dance) == DANCE_FRAMES
    assert (dance.fps, dance.width, dance.height, dance.start) == (24.0, 512, 758, 0)
    assert dance.body.shape == (DANCE_FRAMES, 33, 4) and dance.body.dtype == np.float32
    assert dance.face.shape == (DANCE_FRAMES, 468, 3)
    assert dance.person_found().mean() >= 0.9


def test_dance_rig_ankles_stay_inside_the_frame(dance):
    rig = dance.rig()
    assert rig.shape == (DANCE_FRAMES, 15, 3)
    ankles = rig[dance.person_found()][:, [JOINT_INDEX["right_ankle"], JOINT_INDEX["left_ankle"]]]
    # baggy trousers lower the ankles' confidence on some frames, never both for long
    assert (ankles[..., 2] >= 0.5).any(axis=1).mean() > 0.8
    x, y = ankles[..., 0], ankles[..., 1]
    assert (x >= 0).all() and (x < dance.width).all()
    assert (y >= 0).all() and (y < dance.height).all()
    # feet are in the lower part of a full-body frame
    assert np.median(y) > 0.7 * dance.height


def test_frame_range_matches_the_same_frames_of_a_full_extract(shared_data, dance):
    done = []
    part = extract_poses(shared_data / "dance_fullbody_outdoor.mp4", start=100, stop=120,
                         progress=done.append)
    assert (len(part), part.start) == (20, 100)
    assert done == list(range(1, 21))
    full, ranged = dance.rig()[100:120], part.rig()
    both = (full[..., 2] >= 0.5) & (ranged[..., 2] >= 0.5)
    assert both.mean() > 0.8
    distance = np.linalg.norm(full[..., :2] - ranged[..., :2], axis=-1)[both]
    assert np.median(distance) < 5.0


def test_asl_clip_tracks_hands_and_face(asl):
    assert (len(asl), asl.width, asl.height) == (ASL_FRAMES, 640, 480)
    left = asl.left_hand[..., 2].max(axis=1) > 0
    right = asl.right_hand[..., 2].max(axis=1) > 0
    assert (left | right).mean() >= 0.9
    assert left.mean() > 0.6 and right.mean() > 0.6
    assert (asl.face[..., 2].max(axis=1) > 0).mean() >= 0.9
    # a hand not found is all zeros, never NaN
    assert not np.isnan(asl.left_hand).any()
    assert (asl.right_hand[~right] == 0).all()
    # the signing hand is found near its wrist
    wrist = asl.body[right, 16, :2]
    assert np.median(np.linalg.norm(asl.right_hand[right, 0, :2] - wrist, axis=-1)) < 40


def test_body_only_options_leave_hands_and_face_empty(shared_data):
    options = PoseOptions(hands=False, face=False, smoothing=False)
    seq = extract_poses(shared_data / "gesture_asl_please.mkv", start=0, stop=6, options=options)
    assert len(seq) == 6 and seq.person_found().all()
    assert not seq.left_hand.any() and not seq.right_hand.any() and not seq.face.any()


def test_empty_frame_range_is_refused(shared_data):
    with pytest.raises(FarmError, match="empty"):
        extract_poses(shared_data / "gesture_asl_please.mkv", start=10, stop=10)


def test_still_photo_pose_is_found_and_a_drawing_is_not(shared_data):
    photo = _rgb(shared_data / "fullbody_photo_man.png")
    body = detect_image_pose(photo)
    assert body.shape == (33, 4) and body.dtype == np.float32
    nose, ankles = body[0], body[[27, 28]]
    assert nose[3] > 0.9 and (ankles[:, 3] > 0.5).all()
    assert nose[1] < 0.2 * photo.shape[0] and (ankles[:, 1] > 0.8 * photo.shape[0]).all()
    drawing = detect_image_pose(_rgb(shared_data / "childdrawing_char1.png"))
    assert drawing is None


# --- One-Euro ----------------------------------------------------------------------------------

def _lag(truth: np.ndarray, smoothed: np.ndarray, max_lag: int = 10) -> int:
    """Shift (samples) that best aligns smoothed with truth."""
    n = len(truth) - max_lag
    errors = [np.mean((truth[20:n] - smoothed[20 + k:n + k]) ** 2) for k in range(max_lag)]
    return int(np.argmin(errors))


def test_one_euro_removes_jitter_with_at_most_two_samples_of_lag():
    fps, size = 30.0, 400.0  # a performer 400 px tall
    t = np.arange(300) / fps
    truth = 200 + 100 * np.sin(2 * np.pi * 0.5 * t)  # wrist swing, peak 0.8 body heights/s
    noisy = truth + np.random.default_rng(0).normal(0.0, 2.0, t.shape)
    smoothed = one_euro(noisy, fps, scale=size)
    jitter = lambda x: np.std(np.diff(x - truth, 2)[20:])
    assert jitter(smoothed) < 0.5 * jitter(noisy)
    assert _lag(truth, smoothed) <= 2


def test_one_euro_filters_every_trailing_element_on_its_own():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4, 2)).cumsum(axis=0).astype(np.float32)
    smoothed = one_euro(x, 25.0, scale=10.0)
    assert smoothed.shape == x.shape and smoothed.dtype == np.float32
    single = one_euro(x[:, 2, 1], 25.0, scale=10.0)
    np.testing.assert_allclose(smoothed[:, 2, 1], single, rtol=1e-6)


def test_one_euro_low_confidence_samples_pass_through_and_restart_the_filter():
    x = np.concatenate([np.zeros(10), np.full(10, 100.0)])[:, None]
    confidence = np.ones((20, 1))
    confidence[10:12] = 0.0  # the jump happens while the point is not seen
    out = one_euro(x, 30.0, confidence=confidence, scale=100.0)
    np.testing.assert_array_equal(out[10:12], x[10:12])
    assert out[12, 0] == 100.0  # restarts at the new position instead of gliding from 0
    reference = one_euro(x, 30.0, scale=100.0)
    assert reference[12, 0] < 100.0


# --- storage -----------------------------------------------------------------------------------

def test_pose_parquet_round_trip_is_exact(tmp_path, asl):
    path = tmp_path / "asl.parquet"
    write_parquet(asl, path)
    back = read_parquet(path)
    for name in ("body", "left_hand", "right_hand", "face"):
        np.testing.assert_array_equal(getattr(back, name), getattr(asl, name))
        assert getattr(back, name).dtype == np.float32
    assert (back.fps, back.width, back.height, back.start) == (asl.fps, 640, 480, 0)


def test_rig_parquet_round_trip_is_exact_and_kinds_are_not_mixed(tmp_path, asl):
    joints = asl.rig()
    path = tmp_path / "rig.parquet"
    write_rig_parquet(joints, path, fps=30.0, width=640, height=480)
    back, meta = read_rig_parquet(path)
    np.testing.assert_array_equal(back, joints)
    assert meta == {"fps": 30.0, "width": 640, "height": 480}
    with pytest.raises(FarmError, match="not a motion-farm pose file"):
        read_parquet(path)


# --- OpenPose JSON and drawing -----------------------------------------------------------------

def test_openpose_json_has_coco18_body_hands_and_70_face_points(tmp_path, asl):
    part = PoseSequence(asl.body[5:8], asl.left_hand[5:8], asl.right_hand[5:8], asl.face[5:8],
                        asl.fps, asl.width, asl.height, start=5)
    frames = to_openpose_frames(part)
    assert len(frames) == 3
    person = frames[0]["people"][0]
    assert frames[0]["version"] == 1.3
    assert (frames[0]["canvas_width"], frames[0]["canvas_height"]) == (640, 480)
    assert len(person["pose_keypoints_2d"]) == 18 * 3
    assert len(person["hand_left_keypoints_2d"]) == len(person["hand_right_keypoints_2d"]) == 63
    assert len(person["face_keypoints_2d"]) == 70 * 3
    # neck is the shoulders' midpoint
    neck = person["pose_keypoints_2d"][3:5]
    np.testing.assert_allclose(neck, part.body[0, [11, 12], :2].mean(axis=0), atol=0.01)

    paths = write_openpose_json(part, tmp_path / "openpose")
    assert [p.name for p in paths] == ["000005_keypoints.json", "000006_keypoints.json",
                                       "000007_keypoints.json"]
    assert json.loads(paths[1].read_text()) == frames[1]


def test_openpose_frame_without_a_person_has_no_people():
    empty = PoseSequence(np.zeros((1, 33, 4), np.float32), np.zeros((1, 21, 3), np.float32),
                         np.zeros((1, 21, 3), np.float32), np.zeros((1, 468, 3), np.float32),
                         30.0, 64, 48, 0)
    assert to_openpose_frames(empty)[0]["people"] == []


def test_pose_drawing_uses_openpose_colours_and_scales_lines(asl):
    image = draw_pose_frame(640, 480, asl.body[0], asl.left_hand[0], asl.right_hand[0],
                            asl.face[0])
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    # the neck-to-right-shoulder limb is red at 60 % opacity
    neck = asl.body[0, [11, 12], :2].mean(axis=0)
    middle = np.round((neck + asl.body[0, 12, :2]) / 2).astype(int)
    np.testing.assert_allclose(image[middle[1], middle[0]], 0.6 * np.array(BODY_COLOURS[0]), atol=2)
    # face points are white dots (mesh point 152 is the chin, OpenPose face point 8)
    x, y = np.round(asl.face[0, 152, :2]).astype(int)
    assert (image[y, x] == 255).all()

    small = draw_pose_frame(320, 240, asl.body[0] * [0.5, 0.5, 0.5, 1], None, None, None)
    big = draw_pose_frame(1280, 960, asl.body[0] * [2, 2, 2, 1], None, None, None)
    drawn = lambda im: (im.max(axis=2) > 100).sum()  # lines, not their fringe
    assert drawn(big) > 10 * drawn(small)  # 4x longer and 4x wider; 4x without width scaling


def test_rig_drawing_draws_on_a_background(asl):
    background = np.full((480, 640, 3), 40, np.uint8)
    image = draw_rig_frame(640, 480, asl.rig()[0], background=background)
    assert (background == 40).all()  # not modified
    x, y = np.round(asl.rig()[0, JOINT_INDEX["right_shoulder"], :2]).astype(int)
    np.testing.assert_array_equal(image[y, x], BODY_COLOURS[2])
    assert (image[5, 5] == 40).all()


def test_a_local_extract_of_a_long_video_runs_the_ray_runtimes_chunks_on_a_thread_each(shared_data, dance):
    from farm.pose.extract import chunk_bounds, concat_poses
    from farm.shot.plan import extract_in_process

    class Counting:
        advanced = 0

        def stage(self, name, total=None):
            pass

        def advance(self, n=1):
            self.advanced += n

    video, options, reporter = shared_data / "dance_fullbody_outdoor.mp4", PoseOptions(hands=False, face=False), Counting()
    threaded = extract_in_process(video, DANCE_FRAMES, options, reporter, chunk_frames=60, workers=2)
    bounds = chunk_bounds(DANCE_FRAMES, 60, 2)
    assert bounds == [0, 48, 97, 146, 194]  # 194 / 60 / 2 CPUs rounds to 2 chunks a CPU
    one_by_one = concat_poses([extract_poses(video, start=a, stop=b, options=options) for a, b in zip(bounds, bounds[1:])])
    assert reporter.advanced == DANCE_FRAMES  # progress from both threads adds up to the frames
    assert len(threaded) == DANCE_FRAMES and threaded.start == 0
    for part in ("body", "left_hand", "right_hand", "face"):  # the chunks, whatever thread ran them
        assert np.array_equal(getattr(threaded, part), getattr(one_by_one, part), equal_nan=True), part
    # and the joins (each chunk warms its tracker up first) agree with one pass over the video
    whole, joined = dance.rig(), threaded.rig()
    both = (whole[..., 2] >= 0.5) & (joined[..., 2] >= 0.5)
    assert both.mean() > 0.8
    assert np.median(np.linalg.norm(whole[..., :2] - joined[..., :2], axis=-1)[both]) < 5.0


def test_the_preview_of_a_4k_video_is_drawn_at_the_previews_size_and_looks_the_same(tmp_path, monkeypatch):
    """A 4K source's performer is drawn at the preview's size (720 rows at most), not at 3840x2160
    and shrunk (ten times the cost a frame); the picture is the one the small video makes."""
    import dataclasses
    from fractions import Fraction

    from farm.media.decode import read_frames
    from farm.pose import preview
    from tests.test_render import MEDIA

    small = extract_poses(MEDIA / "gesture_asl_please.mkv", stop=12)
    k = 3840 / small.width
    scaled = {name: getattr(small, name).copy() for name in ("body", "left_hand", "right_hand", "face")}
    for points in scaled.values():
        points[..., :2] *= k
    big = dataclasses.replace(small, **scaled, width=3840, height=round(small.height * k))  # the same performer in 4K
    drawn = []
    real = preview.draw_pose_frame
    monkeypatch.setattr(preview, "draw_pose_frame", lambda w, h, *a, **kw: drawn.append((w, h)) or real(w, h, *a, **kw))
    preview.write_pose_preview(tmp_path / "big.mp4", big, Fraction(30))
    assert set(drawn) == {(960, 720)}
    at_size = {name: points / 4 for name, points in scaled.items()}  # the performer filmed at 960x720
    for name in at_size:
        at_size[name][..., 2:] = scaled[name][..., 2:]  # (depth and confidence as they were)
    preview.write_pose_preview(tmp_path / "small.mp4", dataclasses.replace(small, **at_size, width=960, height=720), Fraction(30))
    ours, theirs = read_frames(tmp_path / "big.mp4"), read_frames(tmp_path / "small.mp4")
    assert ours.shape == theirs.shape == (12, 720, 960, 3)
    assert np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).mean() < 0.5
    assert ours.max() > 200  # something was drawn
