"""The command line as a user meets it: bad input gets one clear line and exit status 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av

from tests.conftest import REPO

MEDIA = REPO / "jobs" / "media"
FARM = [sys.executable, "-m", "farm.cli"]


def run_farm(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    return subprocess.run([*FARM, *map(str, args)], capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=600)


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def render(tmp_path, motion, character, *extra):
    return run_farm("render", motion, character, "-o", tmp_path / "out", *extra)


def test_missing_motion_file(tmp_path):
    done = render(tmp_path, tmp_path / "nope.mp4", MEDIA / "childdrawing_char1.png")
    assert_one_line_error(done, "nope.mp4", "not found")


def test_text_file_named_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    done = render(tmp_path, fake, MEDIA / "childdrawing_char1.png")
    assert_one_line_error(done, "notes.mp4", "not a readable video")


def test_zero_frame_video(tmp_path):
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    done = render(tmp_path, empty, MEDIA / "childdrawing_char1.png")
    assert_one_line_error(done, "empty.mp4")
    assert "frame" in done.stderr


def test_truncated_video(tmp_path, shared_data):
    cut = tmp_path / "cut.mp4"
    data = (shared_data / "dance_fullbody_outdoor.mp4").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    done = render(tmp_path, cut, MEDIA / "childdrawing_char1.png")
    assert_one_line_error(done, "cut.mp4")


def test_character_that_is_not_an_image(tmp_path):
    fake = tmp_path / "hero.png"
    fake.write_bytes(b"\x00\x01 definitely not a png" * 40)
    done = render(tmp_path, MEDIA / "gesture_asl_please.mkv", fake)
    assert_one_line_error(done, "hero.png")


def test_unknown_config_key(tmp_path):
    done = render(tmp_path, MEDIA / "gesture_asl_please.mkv", MEDIA / "childdrawing_char1.png", "match.mood=happy")
    assert_one_line_error(done, "match.mood", "unknown key")


def test_wrong_config_value_names_key_and_allowed_values(tmp_path):
    done = render(tmp_path, MEDIA / "gesture_asl_please.mkv", MEDIA / "childdrawing_char1.png", "match.mode=sideways")
    assert_one_line_error(done, "match.mode", "image, video")


def test_drawing_whose_shape_is_no_humanoid_asks_for_a_skeleton(tmp_path):
    import cv2
    import numpy as np

    # A round mask: no head, hands or feet to propose a skeleton from, and mediapipe finds nobody.
    disk = tmp_path / "disk.png"
    cv2.imwrite(str(disk), cv2.circle(np.zeros((602, 508), np.uint8), (254, 301), 200, 255, -1))
    done = render(tmp_path, MEDIA / "gesture_asl_please.mkv", MEDIA / "childdrawing_char1.png", "--character-mask", disk)
    assert_one_line_error(done, "childdrawing_char1.png", "standing humanoid", "--character-skeleton")
    (manifest,) = (tmp_path / "out").glob("*/manifest.json")
    record = json.loads(manifest.read_text())
    assert record["status"] == "failed"
    assert "--character-skeleton" in record["error"]["message"]
    assert not (manifest.parent / "video.mp4").exists()
    assert [p.name for p in manifest.parent.iterdir() if not p.name.startswith(".")] == ["manifest.json"]  # and the farm's marker


def test_config_prints_resolved_values():
    done = run_farm("config", "match=video", "output.size=720")
    assert done.returncode == 0, done.stderr
    assert "mode: video" in done.stdout and "size: 720" in done.stdout


def test_pose_command_writes_parquet_preview_and_openpose_json(tmp_path):
    from farm.pose.store import read_parquet

    done = run_farm("pose", MEDIA / "gesture_asl_please.mkv", "-o", tmp_path, "--openpose-json")
    assert done.returncode == 0, done.stderr
    poses = read_parquet(tmp_path / "gesture_asl_please.parquet")
    assert len(poses) == 73 and poses.person_found().all()
    assert len(list((tmp_path / "gesture_asl_please_openpose").glob("*_keypoints.json"))) == 73
    with av.open(str(tmp_path / "gesture_asl_please_pose.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 73


def test_shot_id_that_is_a_path_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    done = run_farm("render", tmp_path / "nope.mp4", MEDIA / "childdrawing_char1.png", "-o", tmp_path / "out", "--id", "..")
    assert_one_line_error(done, "shot id", "not a valid id")
    assert (tmp_path / "keep.txt").read_text() == "precious"
    assert not (tmp_path / "out").exists()


def test_campaign_shot_with_a_bad_override_stops_the_campaign_before_it_starts(tmp_path, capsys):
    from farm import cli

    campaign = tmp_path / "c.yaml"
    campaign.write_text(
        f"""
name: overrides
shots:
  - id: sideways
    motion: {MEDIA / 'gesture_asl_please.mkv'}
    character: {MEDIA / 'childdrawing_char1.png'}
    overrides: [match.mode=sideways]
"""
    )
    assert cli.run(["submit", str(campaign), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {campaign} line 4: shots[0]: config match.mode: 'sideways' is not allowed — use one of image, video"
    assert not (tmp_path / "out").exists()  # nothing started, nothing written
