"""End to end on real media: motion video + character image -> an MP4 a user can watch."""
from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from farm import cli
from farm.backends.puppet import PuppetBackend
from farm.config import load_config
from farm.media.decode import iter_frames, read_frames
from farm.pose.store import read_parquet, read_rig_parquet
from farm.shot.render import render_shot
from farm.shot.types import Shot
from tests.conftest import REPO
from tests.test_cli import run_farm

MEDIA = REPO / "jobs" / "media"


DRAWINGS = {
    "char1": ("childdrawing_char1.png", "childdrawing_char1_skeleton.yaml", "childdrawing_char1_mask.png"),
    "char3": ("childdrawing_char3_candycorn.png", "childdrawing_char3_skeleton.yaml", "childdrawing_char3_candycorn_mask.png"),
}


def drawing_shot(motion, drawing: str, **kwargs) -> Shot:
    """A shipped drawing with its skeleton and mask, driven by `motion` (a path or a jobs/media name)."""
    image, skeleton, mask = DRAWINGS[drawing]
    motion = motion if isinstance(motion, Path) else MEDIA / motion
    return Shot(motion=motion, character=MEDIA / image, skeleton=MEDIA / skeleton, mask=MEDIA / mask, **kwargs)


def _decoded(path):
    """(decoded frame count, (codec, pix_fmt, fps, width, height), audio codecs) of a video file."""
    with av.open(str(path)) as container:
        v = container.streams.video[0]
        info = (v.codec_context.name, v.codec_context.pix_fmt, Fraction(v.average_rate), v.width, v.height)
        audio = [s.codec_context.name for s in container.streams.audio]
        frames = sum(1 for _ in container.decode(video=0))
    return frames, info, audio


@pytest.fixture(scope="module")
def photo_shot(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("photo")
    done = run_farm("render", shared_data / "dance_fullbody_outdoor.mp4", shared_data / "fullbody_photo_man.png", "-o", out)
    assert done.returncode == 0, done.stderr
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def test_photo_render_has_reference_frame_count_fps_and_audio(photo_shot):
    frames, (codec, pix_fmt, fps, width, height), audio = _decoded(photo_shot / "video.mp4")
    assert frames == 194
    assert fps == 24
    assert (codec, pix_fmt) == ("h264", "yuv420p")
    assert audio == ["aac"]
    assert max(width, height) == 512 and width % 2 == 0 and height % 2 == 0


def test_photo_render_manifest_is_a_complete_production_record(photo_shot):
    record = json.loads((photo_shot / "manifest.json").read_text())
    assert record["schema_version"] == 1 and record["status"] == "succeeded" and record["error"] is None
    assert record["shot_id"] == photo_shot.name
    for name in ("motion", "character"):
        item = record["inputs"][name]
        assert item["uri"].startswith("file://") and len(item["sha256"]) == 64 and item["bytes"] > 0
    assert record["inputs"]["motion"]["probe"]["frame_count"] == 194
    assert record["config"]["backend"]["name"] == "puppet" and record["config"]["match"]["mode"] == "image"
    for key in ("farm", "python", "numpy", "torch", "mediapipe", "opencv", "av"):
        assert record["versions"][key], key
    # The puppet's windows are cut end to end: every one of the 194 frames drawn once.
    assert [(w["start"], w["end"]) for w in record["windows"]] == [(0, 48), (48, 96), (96, 144), (144, 192), (192, 194)]
    assert record["metrics"]["overlap_overhead"] == 0
    names = {a["path"]: a for a in record["artifacts"]}
    assert {"video.mp4", "pose_preview.mp4", "poses/driving.parquet", "poses/target.parquet"} <= set(names)
    assert names["video.mp4"]["bytes"] == (photo_shot / "video.mp4").stat().st_size
    assert record["preflight"]["video_framing"] == "full_body"
    assert set(record["timings"]) >= {"probe", "character", "pose", "preflight", "retarget", "prepare", "generate", "encode", "artifacts"}
    # The puppet drew every joint within 2 px of the retargeted target on every frame.
    assert record["metrics"]["rig_error_px_max"] <= 2.0


def test_mediapipe_sees_a_person_in_most_frames_of_the_photo_render(photo_shot):
    from farm.pose.extract import PoseOptions, extract_poses

    poses = extract_poses(photo_shot / "video.mp4", options=PoseOptions(hands=False, face=False, smoothing=False))
    found = poses.person_found().mean()
    assert found >= 0.8, f"person re-detected on {found:.0%} of frames"


def test_pose_artifacts_round_trip(photo_shot):
    driving = read_parquet(photo_shot / "poses" / "driving.parquet")
    assert len(driving) == 194 and driving.body.shape == (194, 33, 4)
    targets, meta = read_rig_parquet(photo_shot / "poses" / "target.parquet")
    assert targets.shape == (194, 15, 3)
    frames, _, _ = _decoded(photo_shot / "pose_preview.mp4")
    assert frames == 194


def test_drawing_render_in_video_mode_and_rerun_reuses_the_shot(tmp_path):
    cfg = load_config(["match=video", "output.size=256"])
    shot = drawing_shot("gesture_asl_please.mkv", "char1")
    result = render_shot(shot, cfg, tmp_path)
    assert result.status == "succeeded", result.error
    frames, (_, _, fps, width, height), audio = _decoded(result.video)
    assert frames == 73 and fps == 30 and (width, height) == (256, 192) and audio == []
    assert len(result.manifest["windows"]) == 2
    first = next(iter_frames(result.video, 36, 37))
    assert first.std() > 10  # a real picture, not a flat frame
    again = render_shot(shot, cfg, tmp_path)
    assert again.status == "reused" and again.shot_id == result.shot_id


def test_a_phone_clip_stored_sideways_is_rendered_upright(tmp_path):
    """A clip a phone stored sideways (display rotation -90) drives the character as it is shown:
    the video comes out landscape, and the performer's pose is the one found in the upright clip."""
    from farm.pose.extract import extract_poses
    from tests.test_media import _phone_copies

    upright, phone = _phone_copies(read_frames(MEDIA / "gesture_asl_please.mkv", 0, 24), tmp_path, -90)
    cfg = load_config(["match=video", "output.size=256", "output.pose_preview=false"])
    result = render_shot(drawing_shot(phone, "char1"), cfg, tmp_path / "out")
    assert result.status == "succeeded", result.error
    frames, (_, _, _, width, height), _ = _decoded(result.video)
    assert (frames, width, height) == (24, 256, 192)
    assert result.manifest["inputs"]["motion"]["probe"]["rotation"] == 90
    driving = read_parquet(result.folder / "poses" / "driving.parquet")
    expected = extract_poses(upright)
    assert (driving.width, driving.height) == (640, 480)
    seen = (driving.body[..., 3] > 0.5) & (expected.body[..., 3] > 0.5)
    assert seen.sum() > 24 * 15
    assert np.abs(driving.body[..., :2] - expected.body[..., :2])[seen].max() < 3.0  # pixels of a 640x480 frame


def test_output_fps_override_keeps_the_duration(tmp_path):
    cfg = load_config(["output.fps=15", "output.size=128", "output.pose_preview=false"])
    shot = drawing_shot("gesture_asl_please.mkv", "char3")
    result = render_shot(shot, cfg, tmp_path)
    assert result.status == "succeeded", result.error
    frames, (_, _, fps, _, _), _ = _decoded(result.video)
    assert fps == 15 and frames == round(73 * 15 / 30)


def test_campaign_with_a_broken_shot_renders_the_others(tmp_path, ray_cluster, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    campaign = tmp_path / "c.yaml"
    campaign.write_text(
        f"""
name: mixed
defaults: [output.size=128, output.pose_preview=false]
shots:
  - id: good-one
    motion: {MEDIA / 'gesture_asl_please.mkv'}
    character: {MEDIA / 'childdrawing_char1.png'}
    skeleton: {MEDIA / 'childdrawing_char1_skeleton.yaml'}
    mask: {MEDIA / 'childdrawing_char1_mask.png'}
  - id: bad-one
    motion: {broken}
    character: {MEDIA / 'childdrawing_char1.png'}
  - id: good-two
    motion: {MEDIA / 'walk_two_people_toward_camera.gif'}
    character: {MEDIA / 'childdrawing_char3_candycorn.png'}
    skeleton: {MEDIA / 'childdrawing_char3_skeleton.yaml'}
    mask: {MEDIA / 'childdrawing_char3_candycorn_mask.png'}
"""
    )
    assert cli.run(["submit", str(campaign), "-o", str(tmp_path / "out")]) == 3
    printed = capsys.readouterr().out  # results on stdout
    shots = tmp_path / "out" / "mixed" / "shots"
    status = {p.name: json.loads((p / "manifest.json").read_text())["status"] for p in shots.iterdir()}
    assert status == {"good-one": "succeeded", "bad-one": "failed", "good-two": "succeeded"}
    bad = json.loads((shots / "bad-one" / "manifest.json").read_text())
    assert "broken.mp4" in bad["error"]["message"] and "bad-one" in bad["error"]["message"]
    assert (shots / "good-two" / "video.mp4").exists() and not (shots / "bad-one" / "video.mp4").exists()
    assert "2 rendered, 0 already done, 1 failed" in printed
    table = pq.read_table(tmp_path / "out" / "mixed" / "campaign.parquet").to_pylist()
    assert {r["shot_id"]: r["status"] for r in table} == status
    assert "broken.mp4" in next(r["error"] for r in table if r["shot_id"] == "bad-one")
    walk = json.loads((shots / "good-two" / "manifest.json").read_text())
    assert walk["preflight"]["people_max"] == 2 and any("people" in w for w in walk["preflight"]["warnings"])


def test_named_shot_renders_again_when_its_config_changes(tmp_path):
    shot = drawing_shot("walk_two_people_toward_camera.gif", "char3", shot_id="walk")
    small = load_config(["output.size=96", "output.pose_preview=false"])
    first = render_shot(shot, small, tmp_path)
    assert first.status == "succeeded" and render_shot(shot, small, tmp_path).status == "reused"
    bigger = render_shot(shot, load_config(["output.size=128", "output.pose_preview=false"]), tmp_path)
    assert bigger.status == "succeeded"
    _, (_, _, _, width, height), _ = _decoded(bigger.video)
    assert max(width, height) == 128


def _candycorn_walk(**kwargs) -> Shot:
    return drawing_shot("walk_two_people_toward_camera.gif", "char3", **kwargs)


def test_strict_qa_refuses_a_shot_with_preflight_warnings(tmp_path):
    result = render_shot(_candycorn_walk(), load_config(["qa.strict=true", "output.size=96"]), tmp_path)
    assert result.status == "failed"
    assert "preflight" in result.error and "people" in result.error
    assert [p.name for p in result.folder.iterdir() if not p.name.startswith(".")] == ["manifest.json"]  # and the farm's marker


def test_inputs_outside_the_storage_roots_are_refused(tmp_path):
    cfg = load_config([f"storage.roots=[{tmp_path}]", "output.size=96"])
    result = render_shot(_candycorn_walk(), cfg, tmp_path / "out")
    assert result.status == "failed" and "outside the allowed input roots" in result.error


def test_a_failure_after_the_video_was_written_leaves_no_video(tmp_path, monkeypatch):
    import farm.pose.store

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(farm.pose.store, "write_parquet", broken)
    result = render_shot(_candycorn_walk(), load_config(["output.size=96"]), tmp_path)
    assert result.status == "failed" and "disk full" in result.error
    record = json.loads((result.folder / "manifest.json").read_text())
    assert record["status"] == "failed" and "traceback" in record["error"]
    # No video or artifact is left; the window checkpoints stay for the rerun.
    assert sorted(p.name for p in result.folder.iterdir() if not p.name.startswith(".")) == ["manifest.json", "windows"]
    rerun = render_shot(_candycorn_walk(), load_config(["output.size=96"]), tmp_path)
    assert rerun.status == "failed"  # write_parquet is still broken
    assert rerun.manifest["timings"].get("generate", 0) == 0  # but no window was rendered again


def test_keep_audio_false_drops_the_sound(tmp_path, shared_data):
    cfg = load_config(["output.keep_audio=false", "output.size=96", "output.pose_preview=false", "pose.face=false"])
    shot = drawing_shot(shared_data / "dance_fullbody_outdoor.mp4", "char1")
    result = render_shot(shot, cfg, tmp_path)
    assert result.status == "succeeded", result.error
    frames, _, audio = _decoded(result.video)
    assert frames == 194 and audio == []


def test_a_shot_encoded_in_segments_is_one_video_with_its_audio(tmp_path, shared_data):
    common = ["output.size=96", "output.pose_preview=false", "pose.face=false", "window.length=24", "window.overlap=4"]
    shot = drawing_shot(shared_data / "dance_fullbody_outdoor.mp4", "char1")
    parts = render_shot(shot, load_config([*common, "output.segment_frames=50"]), tmp_path / "parts")
    whole = render_shot(shot, load_config([*common, "output.segment_frames=0"]), tmp_path / "whole")
    assert [parts.status, whole.status] == ["succeeded", "succeeded"], [parts.error, whole.error]
    assert [(s["start"], s["end"]) for s in parts.manifest["segments"]] == [(0, 60), (60, 120), (120, 194)]
    assert len(whole.manifest["segments"]) == 1
    frames, _, audio = _decoded(parts.video)
    assert frames == 194 and audio == ["aac"]
    assert not (parts.folder / "segments").exists() and not (parts.folder / "windows").exists()
    # The same frames, in place, up to the encoder (x264 sees each segment on its own, so its rate
    # control rounds differently): far closer than the same video one frame off.
    ours, theirs = read_frames(parts.video).astype(int), read_frames(whole.video).astype(int)
    same, shifted = np.abs(ours - theirs).mean(), np.abs(ours[1:] - theirs[:-1]).mean()
    assert same < 3 and shifted > 2 * same


class _ChainRecorder(PuppetBackend):
    """The puppet, declared able to chain: it renders as the puppet does and records what each
    window was given to continue from (the product's chained plumbing is what is under test)."""

    spec = dataclasses.replace(PuppetBackend.spec, can_chain=True, condition_frames=2)

    def __init__(self) -> None:
        super().__init__()
        self.previous: dict[int, np.ndarray | None] = {}
        self.rendered: dict[int, np.ndarray] = {}

    def render_window(self, request):
        self.previous[request.start] = request.previous
        result = super().render_window(request)
        self.rendered[request.start] = result.frames
        return result


def test_chained_windows_continue_from_the_end_of_the_window_before(tmp_path):
    cfg = load_config(["output.size=96", "output.pose_preview=false", "window.length=12", "window.overlap=2",
                       "window.mode=chained", "window.chains=2"])
    backend = _ChainRecorder()
    result = render_shot(drawing_shot("gesture_asl_please.mkv", "char1"), cfg, tmp_path, backend=backend)
    assert result.status == "succeeded", result.error
    starts = [w["start"] for w in result.manifest["windows"]]
    assert len(starts) == 8 and len(read_frames(result.video)) == 73
    heads = {starts[0], starts[4]}  # two chains: windows 0-3 and 4-7
    assert {start for start, previous in backend.previous.items() if previous is None} == heads
    for before, after in zip(starts, starts[1:]):
        if after not in heads:  # the 2 frames of the window before where this one starts, as rendered
            at = after - before  # 10, except for the last window, shifted back to end the shot: 1
            assert np.array_equal(backend.previous[after], backend.rendered[before][at : at + 2])
    assert starts[-1] - starts[-2] == 1


def test_chained_mode_is_refused_for_a_backend_that_cannot_chain(tmp_path):
    cfg = load_config(["output.size=96", "window.mode=chained"])
    result = render_shot(drawing_shot("gesture_asl_please.mkv", "char1"), cfg, tmp_path)
    assert result.status == "failed"
    assert "window.mode" in result.error and "window.mode=parallel" in result.error
