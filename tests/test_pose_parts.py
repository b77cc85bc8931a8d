"""Extract only what is used (issue 13.6): a backend's pose parts, body-only extraction against
Holistic's on a real clip, the motion library serving a poorer request from a richer entry, and
what a shot's manifest says it tracked."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from farm.backends.puppet import PuppetBackend
from farm.backends.wan_animate import WanAnimateBackend
from farm.config import load_config
from farm.pose.extract import POSE_PARTS, PoseOptions, PoseSequence, extract_poses
from farm.pose.library import MotionEntry, keep, library_key, lookup
from farm.shot.plan import plan_shot
from farm.shot.planned import ShotPlan
from farm.shot.tools import backend_spec, shot_pose_options
from farm.storage import Storage
from tests.test_render import MEDIA, drawing_shot

PLEASE = "gesture_asl_please.mkv"  # 73 frames, upper body, signing hands
BODY = ("body",)


@pytest.fixture(scope="module")
def holistic() -> PoseSequence:
    return extract_poses(MEDIA / PLEASE)


@pytest.fixture(scope="module")
def body_only() -> PoseSequence:
    return extract_poses(MEDIA / PLEASE, options=PoseOptions(hands=False, face=False))


def test_body_only_extraction_has_no_hands_or_face_and_holistics_body(holistic, body_only):
    assert (holistic.right_hand[..., 2].max(axis=1) > 0).mean() > 0.6  # the clip does show hands
    assert not body_only.left_hand.any() and not body_only.right_hand.any() and not body_only.face.any()
    assert body_only.person_found().all()
    # Holistic runs the same body model as plain Pose: measured equal to the bit on this clip.
    assert np.abs(body_only.body[..., :2] - holistic.body[..., :2]).max() < 0.5


def test_the_puppet_tracks_the_body_alone_and_wan_animate_everything_the_config_allows():
    puppet, wan = load_config([]), load_config(["backend=wan_animate"])
    assert shot_pose_options(puppet, backend_spec(puppet)).parts() == BODY
    assert shot_pose_options(wan, WanAnimateBackend.spec).parts() == POSE_PARTS
    # pose.hands=false leaves the hands out even for a backend that reads them
    no_hands = load_config(["backend=wan_animate", "pose.hands=false"])
    assert shot_pose_options(no_hands, WanAnimateBackend.spec).parts() == ("body", "face")
    # OpenPose files have hands and face, so asking for them tracks those too
    openpose = load_config(["output.openpose_json=true"])
    assert shot_pose_options(openpose, PuppetBackend.spec).parts() == POSE_PARTS


def _poses(frames: int = 3) -> PoseSequence:
    rng = np.random.default_rng(0)
    parts = {name: rng.random((frames, points, channels), dtype=np.float32) + 0.1
             for name, points, channels in (("body", 33, 4), ("left_hand", 21, 3), ("right_hand", 21, 3), ("face", 468, 3))}
    return PoseSequence(**parts, fps=30.0, width=64, height=64, start=0)


def test_a_holistic_entry_serves_a_body_only_request_and_a_body_only_entry_no_holistic_one(tmp_path):
    store, rich, poor = Storage(), str(tmp_path / "rich"), str(tmp_path / "poor")
    everything, body = PoseOptions(), PoseOptions(hands=False, face=False)
    poses = _poses()
    keep(store, rich, library_key("sha", everything, "mediapipe"), MotionEntry(poses, (1, "1 person seen"), POSE_PARTS), "m")
    key, entry = lookup(store, rich, "sha", body, "mediapipe")
    assert key == library_key("sha", everything, "mediapipe") != library_key("sha", body, "mediapipe")
    assert entry.parts == POSE_PARTS and entry.people == (1, "1 person seen")
    assert np.array_equal(entry.poses.body, poses.body)
    assert not entry.poses.left_hand.any() and not entry.poses.right_hand.any() and not entry.poses.face.any()
    # Other settings still have to match.
    assert lookup(store, rich, "sha", dataclasses.replace(body, min_cutoff=2.0), "mediapipe") is None

    keep(store, poor, library_key("sha", body, "mediapipe"), MotionEntry(poses.only(BODY), (1, "1 person seen"), BODY), "m")
    assert lookup(store, poor, "sha", everything, "mediapipe") is None
    assert lookup(store, poor, "sha", PoseOptions(face=False), "mediapipe") is None
    # With both, the request's own entry is taken.
    keep(store, rich, library_key("sha", body, "mediapipe"), MotionEntry(poses.only(BODY), (1, "1 person seen"), BODY), "m")
    assert lookup(store, rich, "sha", body, "mediapipe")[0] == library_key("sha", body, "mediapipe")


def _extractor(holistic: PoseSequence, body_only: PoseSequence, asked: list):
    """plan_shot's `extract`, handing out the clip's poses for the parts asked for."""
    def extract(video, frame_count, options, reporter):
        asked.append(options.parts())
        return {POSE_PARTS: holistic, BODY: body_only}[options.parts()]

    return extract


def _one_person(video):
    return lambda poses: (1, "1 person seen")


def test_a_puppet_shot_extracts_the_body_alone_and_its_manifest_says_so(tmp_path, holistic, body_only):
    asked: list = []
    plan = plan_shot(drawing_shot(PLEASE, "char1"), load_config(["output.pose_preview=false"]), tmp_path / "out",
                     PuppetBackend.spec, extract=_extractor(holistic, body_only, asked), people=_one_person,
                     library=str(tmp_path / "library"))
    assert isinstance(plan, ShotPlan), plan
    assert asked == [BODY]
    assert plan.record["pose"] == {"parts": ["body"], "tracked": ["body"]}
    assert plan.record["versions"]["pose_model"] == "mediapipe pose/pose_landmark_full"
    # An upper-body signing clip: hands would be checked, but the puppet does not read them.
    preflight = plan.record["preflight"]
    assert preflight["video_framing"] == "upper_body" and preflight["hands_visible_ratio"] is None
    assert not any(w.startswith("hands") for w in preflight["warnings"])


def test_a_puppet_shot_takes_the_body_of_an_entry_a_wan_animate_shot_extracted(tmp_path, holistic, body_only):
    asked: list = []
    extract, library = _extractor(holistic, body_only, asked), str(tmp_path / "library")
    cfg = load_config(["output.pose_preview=false"])
    wan = plan_shot(drawing_shot(PLEASE, "char1"), cfg, tmp_path / "out", WanAnimateBackend.spec,
                    extract=extract, people=_one_person, library=library)
    assert isinstance(wan, ShotPlan), wan
    assert wan.record["pose"] == {"parts": list(POSE_PARTS), "tracked": list(POSE_PARTS)}
    assert wan.record["preflight"]["hands_visible_ratio"] > 0.9
    puppet = plan_shot(drawing_shot(PLEASE, "char1"), cfg, tmp_path / "out", PuppetBackend.spec,
                       extract=extract, people=_one_person, library=library)
    assert asked == [POSE_PARTS]  # the puppet shot extracted nothing
    assert puppet.record["motion_library"] == {"key": wan.record["motion_library"]["key"], "reused": True}
    assert puppet.record["pose"] == {"parts": ["body"], "tracked": list(POSE_PARTS)}
    assert puppet.record["versions"]["pose_model"] == "mediapipe holistic/pose_landmark_full"
    assert np.array_equal(puppet.driving.body, holistic.body) and not puppet.driving.right_hand.any()
    assert puppet.record["preflight"]["hands_visible_ratio"] is None
