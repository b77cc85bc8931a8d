"""Quality metrics on cases with known answers, re-render flags, and the HTML reports."""
from __future__ import annotations

import dataclasses
import json
import re
import time

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from farm import cli
from farm.backends.puppet.backend import PuppetBackend
from farm.character import load_character
from farm.config import load_config
from farm.media.decode import read_frames
from farm.pose.extract import PoseOptions, extract_poses
from farm.pose.store import read_rig_parquet
from farm.qa import metrics as m
from farm.qa.measure import Appearance, FrameMeter, coco17_from_body, read_quality_table, shot_quality, verdict
from farm.qa.track import Texture, track_joints
from farm.rig import JOINT_INDEX
from farm.shot.render import render_shot
from farm.shot.types import Shot
from farm.stitch import Stitcher
from farm.types import Character
from farm.windows import plan_windows
from tests.test_render import DRAWINGS, MEDIA, drawing_shot

VIDEO = MEDIA / "gesture_asl_please.mkv"


def _skeleton(torso: float = 100.0) -> np.ndarray:
    """One COCO-17 pose, all points seen, torso (shoulders' to hips' midpoint) `torso` pixels."""
    pose = np.zeros((1, 17, 3))
    pose[0, :, 2] = 1.0
    pose[0, :, 0] = 200 + 10 * np.arange(17)
    pose[0, :, 1] = 100
    pose[0, [5, 6, 11, 12], 0] = [280, 320, 285, 315]  # the shoulders' and hips' midpoints at x = 300
    pose[0, [11, 12], 1] = 100 + torso
    pose[0, 13:, 1] = 100 + 2 * torso
    return pose


def test_pck_and_oks_of_a_skeleton_shifted_by_a_known_amount():
    target = _skeleton(torso=100.0)
    assert m.pck(target, target)[0] == 1.0 and m.oks(target, target)[0] == pytest.approx(1.0)
    # PCK@0.1 of a 100-pixel torso: within 10 pixels is a hit.
    assert m.pck(target + [9.9, 0, 0], target)[0] == 1.0
    assert m.pck(target + [0, 10.1, 0], target)[0] == 0.0
    half = target.copy()
    half[0, :8, 0] += 15  # 8 of 17 points off by 15 px
    assert m.pck(half, target)[0] == pytest.approx(9 / 17)
    # A missed point is a miss; an unseen target point is not counted.
    missed = target.copy()
    missed[0, 3, 2] = 0.0
    assert m.pck(missed, target)[0] == pytest.approx(16 / 17)
    unseen = target.copy()
    unseen[0, 3, 2] = 0.0
    assert m.pck(missed, unseen)[0] == 1.0
    # OKS: exp(-d^2 / (2 area k^2)), k = 2 sigma, area = the target points' box, averaged.
    shifted = target + [6.0, 8.0, 0]  # d = 10 px
    box = target[0, :, :2].max(axis=0) - target[0, :, :2].min(axis=0)
    expected = np.exp(-100.0 / (2 * box.prod() * (2 * m.COCO_SIGMAS) ** 2)).mean()
    assert m.oks(shifted, target)[0] == pytest.approx(expected)


def test_jitter_is_acceleration_per_torso_size():
    still = np.repeat(_skeleton(100.0), 10, axis=0)
    moving = still + np.arange(10)[:, None, None] * [3.0, 0, 0]  # constant speed: no acceleration
    assert np.nanmax(m.acceleration(moving)) == pytest.approx(0.0)
    shaking = still.copy()
    shaking[1::2, :, 0] += 2.0  # +2 px every other frame: |x[t-1] - 2x[t] + x[t+1]| = 4 px
    assert np.nanmean(m.acceleration(shaking)) == pytest.approx(0.04)


def _meter(frames, targets15, character_frame=0, start=0):
    joints = targets15[character_frame]
    character = Character(image=frames[character_frame], mask=np.ones(frames.shape[1:3], bool), joints=joints,
                          source="detected", sha256="")
    with FrameMeter(Appearance.of(character), targets15[start : start + len(frames)]) as meter:
        for frame in frames:
            meter.add(frame)
    return meter.result()


@pytest.fixture(scope="module")
def performer():
    """The reference video, and the target skeleton tracked on it with the same detector QA uses."""
    frames = read_frames(VIDEO)
    poses = extract_poses(VIDEO, options=PoseOptions(hands=False, face=False, smoothing=False, warmup_frames=0))
    return frames, poses


def _stitched(frames, windows, window_frames):
    """Stitch windows (their frames from window_frames(window)) as the farm does; returns the
    frames and the seam score of each join."""
    stitcher = Stitcher(len(frames), "linear", "none")
    out = []
    for k, window in enumerate(windows):
        following = windows[k + 1].start if k + 1 < len(windows) else None
        out.extend(stitcher.add(window, window_frames(window), following))
    return np.stack(out), dict(stitcher.seams)


def test_a_video_measured_against_its_own_pose_and_windows_scores_pck_1_and_seam_1(performer):
    frames, poses = performer
    target, rig = coco17_from_body(poses.body), poses.rig()
    windows = plan_windows(len(frames), 25, 9)
    # Windows cut from the video itself: the stitch gives back the video, and every join is invisible.
    stitched, seams = _stitched(frames, windows, lambda w: frames[w.start : w.end])
    assert np.array_equal(stitched, frames) and seams == {1: 1.0, 2: 1.0, 3: 1.0}
    part = {**_meter(stitched, rig), "seams": np.array(list(seams.items()))}
    quality = shot_quality([part], windows, target)
    s = quality.summary
    assert s["pose_source"] == "mediapipe" and s["pose_detected"] == 1.0
    assert s["pose_pck"] == 1.0 and s["pose_oks"] == 1.0 and s["seam_score"] == 1.0
    assert s["jitter"] == s["jitter_target"]
    assert verdict(s, quality.windows, load_config([]).qa) == []

    # Measured in two segments, the frame differences join up exactly.
    split = [_meter(frames[:40], rig), _meter(frames[40:], rig, start=40)]
    again = shot_quality(split, windows, target)
    assert np.array_equal(again.frames["frame_diff"][1:], quality.frames["frame_diff"][1:])


def test_points_the_target_puts_below_the_frame_are_not_judged(performer):
    """A half-length picture: the frames cut above the elbows, the target still reaching below the
    cut. No backend can show those points and no detector find them, so they are not judged; the
    points in the frame are, as before."""
    frames, poses = performer
    target = coco17_from_body(poses.body)
    elbows = [m.COCO17.index(name) for name in ("left_elbow", "right_elbow")]
    cut = int(np.median(target[:, elbows, 1])) // 2 * 2
    cropped = np.ascontiguousarray(frames[:, :cut])
    below = (target[..., 1] >= cut) & (target[..., 2] >= 0.5)
    assert below[:, elbows].mean() > 0.3  # the cut hides the elbows on many frames
    windows = plan_windows(len(frames), 25, 9)
    part = _meter(cropped, poses.rig())

    judged = shot_quality([part], windows, target).summary
    assert judged["joint_pck"] < 0.5 and judged["joint_pck_worst"] in {m.COCO17[k] for k in np.flatnonzero(below.any(axis=0))}

    quality = shot_quality([part], windows, target, frame_size=(frames.shape[2], cut))
    kept, x, y = quality.frames["target"], target[..., 0], target[..., 1]
    outside = (x < 0) | (y < 0) | (x >= frames.shape[2]) | (y >= cut)
    assert not (kept[outside, 2] > 0).any() and np.array_equal(kept[~outside], target[~outside])
    assert quality.summary["joint_pck"] >= 0.5 and quality.summary["pose_pck"] > judged["pose_pck"]


def test_windows_that_disagree_make_a_seam(performer):
    frames, poses = performer
    windows = plan_windows(len(frames), 25, 9)
    # Window 2 is rendered 20 frames late (held on the video's first frame until then): a jump
    # where it takes over; windows 1 and 3 still agree with their neighbours where they overlap.
    late = np.concatenate([np.repeat(frames[:1], 20, axis=0), frames])

    def window_frames(w):
        return late[w.start : w.end] if w.index == 2 else frames[w.start : w.end]

    _, seams = _stitched(frames, windows, window_frames)
    assert seams[2] > 1.5 and seams[3] > 1.5 and seams[1] == 1.0
    # A colour cast on one window is a seam too (window.colour=none: nothing corrects it).
    cast = np.clip(frames.astype(int) + [0, 0, 40], 0, 255).astype(np.uint8)
    _, seams = _stitched(frames, windows, lambda w: cast[w.start : w.end] if w.index == 2 else frames[w.start : w.end])
    assert min(seams[2], seams[3]) > 5.0 and seams[1] == 1.0
    assert m.join_seam(np.zeros((4, 8, 8), np.uint8), np.zeros((5, 8, 8), np.uint8)) == 1.0  # nothing moves, nothing seen
    quality = shot_quality([{**_meter(frames, poses.rig()), "seams": np.array([[1, 1.0], [2, 3.2], [3, 2.9]])}], windows,
                           coco17_from_body(poses.body))
    reasons = verdict(quality.summary, quality.windows, load_config([]).qa)
    assert any(r.startswith("seam_score 3.2 > 1.5") and "worst in window 2 (frames 32-56)" in r for r in reasons)


def test_a_jitter_reason_names_the_window_that_shakes(performer):
    frames, poses = performer
    windows = plan_windows(len(frames), 25, 9)
    # The frames of window 1 (16-40) shake sideways by 40 px every other frame; the others are the video.
    shaken = frames.copy()
    for t in range(windows[1].start + 2, windows[2].start, 2):
        shaken[t] = np.roll(frames[t], 40, axis=1)
    quality = shot_quality([_meter(shaken, poses.rig())], windows, coco17_from_body(poses.body))
    jitter = {w["index"]: w["jitter"] for w in quality.windows}
    assert jitter[1] > 2 * max(jitter[0], jitter[2], jitter[3]), jitter
    qa = dataclasses.replace(load_config([]).qa, max_jitter=quality.summary["jitter"] / 2)
    (reason,) = [r for r in verdict(quality.summary, quality.windows, qa) if r.startswith("jitter")]
    assert f"worst in window 1 (frames {windows[1].start}-{windows[1].end - 1})" in reason


class _ShiftedWindow(PuppetBackend):
    """The puppet, with the colours of one window cast blue: what a diffusion window that drifts
    looks like to the stitch and to QA."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.start = start

    def render_window(self, request):
        result = super().render_window(request)
        if request.start == self.start:
            result.frames = np.clip(result.frames.astype(int) + [-30, 0, 60], 0, 255).astype(np.uint8)
        return result


@pytest.mark.parametrize("colour", ["none", "lab"])
def test_one_window_colour_shifted_is_flagged_unless_the_stitch_corrects_it(tmp_path, colour):
    # Overlapping windows, as a model's are (the puppet's own are cut end to end).
    cfg = load_config(["output.size=160", "output.pose_preview=false", f"window.colour={colour}", "window.overlap=8"])
    result = render_shot(drawing_shot(VIDEO, "char1"), cfg, tmp_path, backend=_ShiftedWindow(start=25))
    assert result.status == "succeeded", result.error
    metrics, qa = result.manifest["metrics"], result.manifest["qa"]
    drift = [w["appearance_drift"] for w in metrics["windows"]]
    assert [w["start"] for w in metrics["windows"]] == [0, 25]
    if colour == "none":
        assert drift[1] > 0.5 > 0.2 > drift[0]
        assert qa["needs_rerender"] is True
        assert any(r.startswith("appearance_drift") and "worst in window 1 (frames 25-72)" in r for r in qa["reasons"])
    else:  # the Lab fit anchored to window 0 takes the cast out
        assert drift[1] < 0.4 and qa == {"needs_rerender": False, "reasons": []}
    # The per-frame table is written with the shot, and the report shows the verdict.
    table = pq.read_table(result.folder / "qa.parquet").to_pydict()
    assert len(table["frame"]) == 73 and table["window"][30] == 1
    page = (result.folder / "report.html").read_text()
    assert ("needs re-render" in page) == (colour == "none")


@pytest.mark.parametrize("drawing", ["char1", "char3"])
def test_texture_tracking_finds_each_part_of_a_drawing_where_it_is_drawn(drawing):
    image, skeleton, mask = DRAWINGS[drawing]
    character, _ = load_character(MEDIA / image, skeleton_path=MEDIA / skeleton, mask_path=MEDIA / mask)
    texture = Texture.of(character)
    rest = character.joints[:, :2]
    torso = np.linalg.norm(rest[JOINT_INDEX["neck"]] - rest[JOINT_INDEX["pelvis"]])
    # The crowned man's round head can be placed; the candy corn's head is a plain cone (its patch
    # slides along it) and is not measured.
    head_measured = "head" in texture.measured()
    assert head_measured == (drawing == "char1") and len(texture.measured()) == 12 + head_measured
    found = track_joints(texture, character.image, character.joints)  # the picture is the rest pose
    measured = np.isfinite(found[:, 2])
    assert np.abs(found[measured, :2] - rest[measured]).max() < 0.02 * torso and found[measured, 2].min() > 0.9
    # The whole picture a quarter torso right of where the target puts it: every part found there.
    dx = int(0.25 * torso)
    found = track_joints(texture, np.roll(character.image, dx, axis=1), character.joints)
    assert np.abs(found[measured, 0] - rest[measured, 0] - dx).max() < 0.02 * torso
    assert np.abs(found[measured, 1] - rest[measured, 1]).max() < 0.02 * torso and found[measured, 2].min() > 0.7


class _ArmAstray(PuppetBackend):
    """The puppet, with the right forearm and hand of every frame cut out and pasted a quarter of
    the torso further out (the hole filled with the paper's colour): a limb drawn where the target
    does not put it, as a model may draw one."""

    def render_window(self, request):
        result = super().render_window(request)
        frames = result.frames.copy()
        for k, joints in enumerate(np.asarray(request.targets)[:, :, :2]):
            elbow, wrist = joints[JOINT_INDEX["right_elbow"]], joints[JOINT_INDEX["right_wrist"]]
            torso = np.linalg.norm(joints[JOINT_INDEX["neck"]] - joints[JOINT_INDEX["pelvis"]])
            forearm = np.zeros(frames.shape[1:3], np.uint8)
            cv2.line(forearm, tuple(map(int, elbow)), tuple(map(int, wrist)), 1, int(0.35 * torso))
            cv2.circle(forearm, tuple(map(int, wrist)), int(0.3 * torso), 1, -1)
            dx = int(round(0.25 * torso)) * (1 if wrist[0] > joints[JOINT_INDEX["neck"], 0] else -1)  # away from the body
            moved = np.roll(forearm, dx, axis=1).astype(bool)
            frame = frames[k]
            pixels = np.roll(frame, dx, axis=1)[moved]
            frame[forearm.astype(bool)] = np.median(frame.reshape(-1, 3), axis=0).astype(np.uint8)
            frame[moved] = pixels
        result.frames = frames
        return result


def test_a_drawing_is_measured_by_its_texture_in_the_frames_and_an_arm_drawn_astray_is_flagged(tmp_path):
    cfg = load_config(["output.size=256", "output.pose_preview=false"])
    shot = drawing_shot(VIDEO, "char1")
    # mediapipe does not find the drawing's pose in its own image, and the puppet's own account of
    # where it drew each joint would grade itself: the drawing's parts are found in the frames.
    result = render_shot(shot, cfg, tmp_path / "puppet")
    assert result.status == "succeeded", result.error
    metrics = result.manifest["metrics"]
    assert metrics["pose_source"] == "texture-tracked"
    assert metrics["pose_pck"] > 0.95 and metrics["pose_oks"] > 0.95
    # The right arm folds onto itself in the please sign: the elbow, measured where it is not
    # folded under the forearm, is the worst point, and still where it should be on most frames.
    assert metrics["joint_pck_worst"] == "right_elbow" and metrics["joint_pck"] > 0.6
    assert result.manifest["qa"] == {"needs_rerender": False, "reasons": []}

    astray = render_shot(shot, cfg, tmp_path / "astray", backend=_ArmAstray())
    metrics, qa = astray.manifest["metrics"], astray.manifest["qa"]
    assert metrics["pose_source"] == "texture-tracked"
    assert metrics["pose_pck"] > 0.8  # the shot's PCK alone would let it pass
    assert metrics["joint_pck_worst"] == "right_elbow" and metrics["joint_pck"] == 0.0
    assert qa == {"needs_rerender": True,
                  "reasons": ["joint_pck 0 < 0.5 (min): right_elbow is where the target puts it on 0% of frames"]}
    # The wrist is found where the arm was pasted, a quarter torso out (on nearly every frame).
    table = read_quality_table(astray.folder / "qa.parquet")
    targets, _ = read_rig_parquet(astray.folder / "poses" / "target.parquet")
    torso = np.linalg.norm(targets[:, JOINT_INDEX["neck"], :2] - targets[:, JOINT_INDEX["pelvis"], :2], axis=-1)
    wrist = targets[:, JOINT_INDEX["right_wrist"], :2]
    outward = np.where(wrist[:, 0] > targets[:, JOINT_INDEX["neck"], 0], 1, -1)
    moved = np.round(0.25 * torso) * outward
    off = table["measured"][:, 10, :2] - wrist
    pasted = np.hypot(off[:, 0] - moved, off[:, 1]) < 0.05 * torso
    assert np.all(table["measured"][:, 10, 2] == 1.0) and pasted.mean() > 0.9
    assert m.point_pck(table["measured"], table["target"])[10] == 0.0


def test_photo_character_is_measured_by_re_detection(tmp_path, shared_data):
    cfg = load_config(["output.size=384", "output.pose_preview=false"])
    from farm.shot.types import Shot

    shot = Shot(motion=VIDEO, character=shared_data / "fullbody_photo_man.png")
    result = render_shot(shot, cfg, tmp_path)
    metrics = result.manifest["metrics"]
    assert metrics["pose_source"] == "mediapipe" and metrics["pose_detected"] == 1.0
    assert metrics["pose_pck"] > 0.9 and metrics["pose_oks"] > 0.9 and metrics["joint_pck"] > 0.9
    assert metrics["appearance_drift"] < 0.5 and metrics["seam_score"] < 2.0


def test_thresholds_flag_a_shot_with_every_reason(tmp_path):
    qa = load_config(["qa.max_jitter=0", "qa.max_seam_score=1", "qa.max_overlap_overhead=0.1"]).qa
    metrics = {"jitter": 0.01, "seam_score": 1.2, "overlap_overhead": 0.32, "pose_pck": 0.9, "pose_source": "mediapipe",
               "pose_detected": 0.3, "joint_pck": 0.25, "joint_pck_worst": "left_knee"}
    reasons = verdict(metrics, [], qa)
    assert [r.split()[0] for r in reasons] == ["joint_pck", "jitter", "seam_score", "overlap_overhead", "pose_detected"]
    assert reasons[0] == "joint_pck 0.25 < 0.5 (min): left_knee is where the target puts it on 25% of frames"
    assert "found on 30% of frames" in reasons[-1]
    assert verdict(metrics, [], load_config(["qa.min_pose_detected=null", "qa.max_jitter=null", "qa.min_joint_pck=0.2"]).qa) == []
    assert load_config(campaign=["qa.min_joint_pck=0.8"]).qa.min_joint_pck == 0.8  # a campaign may be stricter


def test_shot_report_is_self_contained_and_records_the_shot(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.run(["render", str(VIDEO), str(MEDIA / "childdrawing_char1.png"), "--character-skeleton",
                    str(MEDIA / "childdrawing_char1_skeleton.yaml"), "--id", "please", "-o", str(out), "output.size=128"])
    assert code == 0
    assert f"report: {out / 'please' / 'report.html'}" in capsys.readouterr().out  # results on stdout
    folder = out / "please"
    manifest = json.loads((folder / "manifest.json").read_text())
    page = (folder / "report.html").read_text()
    _assert_self_contained(page)
    assert "Shot please" in page and page.count("data:image/jpeg;base64,") >= 1 + 3 * 6  # character + 6 moments x 3
    assert page.count("<svg") == 4
    for artifact in manifest["artifacts"]:
        assert artifact["sha256"] in page
    for warning in manifest["preflight"]["warnings"]:
        assert warning.split(";")[0].replace("'", "&#39;") in page
    assert manifest["report"] == "report.html" and manifest["report_error"] is None


def test_a_per_frame_plot_breaks_where_a_value_is_missing_and_shades_the_joins():
    from farm.report import _line_plot

    pck = np.array([0.9, 0.8, np.nan, np.nan, 0.7, 0.75, 0.8, 0.85])
    svg = str(_line_plot("Pose <fidelity>", np.arange(8), [("PCK", pck), ("OKS", np.full(8, 0.5))], (0, 1.02), [(3, 4)]))
    lines = re.findall(r'<polyline points="([^"]+)"', svg)
    assert [len(points.split()) for points in lines] == [2, 4, 8]  # PCK around its gap, then OKS whole
    assert svg.count('fill="#f4c542"') == 1 and 'aria-label="Pose &lt;fidelity&gt;"' in svg
    ys = [float(p.split(",")[1]) for p in lines[2].split()]
    assert len(set(ys)) == 1  # a flat series is a flat line
    assert ">0.50<" in svg and ">1.00<" in svg  # round ticks


def test_campaign_table_has_the_metrics_and_flags(tmp_path, ray_cluster):
    from tests.test_runtime import _campaign, _drawing

    shots = _drawing("please", "gesture_asl_please.mkv").replace("}", ", overrides: [qa.max_overlap_overhead=0.1, window.overlap=8]}")
    assert cli.run(["submit", _campaign(tmp_path, shots), "-o", str(tmp_path / "out")]) == 0
    row = pq.read_table(tmp_path / "out" / "c" / "campaign.parquet").to_pylist()[0]
    manifest = json.loads((tmp_path / "out" / "c" / "shots" / "please" / "manifest.json").read_text())
    for metric in ("pose_pck", "pose_oks", "pose_detected", "jitter", "appearance_drift", "appearance_ssim", "seam_score",
                   "overlap_overhead"):
        assert row[metric] == manifest["metrics"][metric]
    assert row["needs_rerender"] is True and row["qa_reasons"] == manifest["qa"]["reasons"]
    assert row["qa_reasons"] == ["overlap_overhead 0.315 > 0.1 (max)"]
    assert row["report"] == str(tmp_path / "out" / "c" / "shots" / "please" / "report.html")


def test_a_new_threshold_renders_nothing_and_judges_finished_shots_again(tmp_path, ray_cluster, capsys):
    from tests.test_runtime import _campaign, _drawing

    campaign = _campaign(tmp_path, _drawing("please", "gesture_asl_please.mkv"))
    out = str(tmp_path / "out")
    assert cli.run(["submit", campaign, "-o", out, "window.overlap=8"]) == 0  # windows that overlap, as a model's
    assert cli.run(["submit", campaign, "-o", out, "window.overlap=8", "qa.max_overlap_overhead=0.1"]) == 0
    doc = json.loads((tmp_path / "out" / "c" / "campaign.json").read_text())
    assert doc["counts"]["windows_rendered"] == 0 and doc["counts"]["shots_reused"] == 1
    assert doc["shots"][0]["needs_rerender"] is True and doc["shots"][0]["qa_reasons"][0].startswith("overlap_overhead")
    manifest = json.loads((tmp_path / "out" / "c" / "shots" / "please" / "manifest.json").read_text())
    assert manifest["qa"]["needs_rerender"] is False  # the record of the render itself is left as it was
    capsys.readouterr()
    assert cli.run(["status", str(tmp_path / "out" / "c")]) == 0
    assert "1/1 shots done: 0 rendered, 1 reused, 0 failed, 1 need a re-render" in capsys.readouterr().out


def _assert_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page), "external reference"
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    assert "<link" not in page and "<script src" not in page


def campaign_rows(page: str) -> list[dict]:
    """The campaign page's table rows (the JSON its script draws the table from), as dicts."""
    block = re.search(r'<script type="application/json" id="rows">(.*?)</script>', page, re.S)
    table = json.loads(block.group(1))
    return [dict(zip(table["fields"], row)) for row in table["rows"]]


def test_campaign_report_of_2000_shots_stays_small_and_counts_them(tmp_path):
    from collections import Counter

    from farm.bench import campaign_record
    from farm.report import write_campaign_report

    doc = campaign_record(2000)
    hostile = "</script><script>alert(1)</script> & <b>bold</b>"
    doc["shots"][0].update(status="failed", error=hostile, needs_rerender=False, qa_reasons=[])
    doc["shots"].append({**doc["shots"][1], "shot_id": "../../escaped"})  # a record read from the store names no path
    doc["shots"][2].update(sweep_of="shot", settings="match.mode=image")  # a sweep's variant: a setting column
    started = time.perf_counter()
    page = write_campaign_report(tmp_path / "report.html", doc).read_text()
    assert time.perf_counter() - started < 5
    assert len(page.encode()) / len(doc["shots"]) < 300  # bytes a shot: no image in the page (341 kB for 40 shots before)
    _assert_self_contained(page)
    assert "data:image" not in page and "</script><script>alert" not in page and "<b>bold" not in page
    # Counts by verdict and by re-render reason (the metric a reason names), as the rows have them.
    verdicts = Counter("failed" if r["status"] == "failed" else "flagged" if r["needs_rerender"] else "passed" for r in doc["shots"])
    shown = dict(re.findall(r'data-verdict="(\w+)">(\d+)<', page))
    assert shown == {verdict: str(n) for verdict, n in verdicts.items()} and verdicts["failed"] > 50 and verdicts["flagged"] > 300
    reasons = Counter(reason.split()[0] for r in doc["shots"] if r["needs_rerender"] for reason in r["qa_reasons"])
    assert dict(re.findall(r'data-reason="(\w+)">(\d+)<', page)) == {metric: str(n) for metric, n in reasons.items()}
    assert page.count('<figure class="histogram"') == 9
    # The worst shots: the 10 lowest PCK@0.1, then the failed ones.
    lowest = sorted((r for r in doc["shots"] if r["status"] != "failed"), key=lambda r: r["pose_pck"])[:10]
    table = page[page.index('<table id="lowest">'):page.index('<table id="failed">')]
    assert re.findall(r'<tr data-shot="([^"]+)"', table) == [r["shot_id"] for r in lowest]
    # Every shot is a row of the table's JSON, flagged first, then failed; user text comes back as written.
    rows = campaign_rows(page)
    order = [r["verdict"] for r in rows]
    assert len(rows) == len(doc["shots"]) and order == sorted(order, key=["flagged", "failed", "passed"].index)
    by_id = {r["shot_id"]: r for r in rows}
    assert by_id["shot-00000"]["error"] == hostile and by_id["shot-00000"]["thumb"] == 0
    assert by_id["shot-00001"]["thumb"] == 1 and by_id["shot-00001"]["report"] == 1
    assert by_id["shot-00002"]["settings"] == "match.mode=image" and 'data-field="settings" data-type="text">setting<' in page
    assert by_id["../../escaped"]["thumb"] == 0 and by_id["../../escaped"]["report"] == 0
    assert "shots/../" not in page


def test_a_character_picture_of_two_people_is_measured_on_the_one_that_moves(tmp_path, shared_data):
    """multi_two_women_fullbody.png: the puppet animates the woman mediapipe finds in the picture;
    the other stands still beside her. QA must measure the one the target says, not whichever
    mediapipe finds most prominent in the output."""
    cfg = load_config(["output.size=256", "output.pose_preview=false"])
    result = render_shot(Shot(motion=VIDEO, character=shared_data / "multi_two_women_fullbody.png"), cfg, tmp_path)
    assert result.status == "succeeded", result.error
    metrics = result.manifest["metrics"]
    # 0.63 here (0 when measured on the other woman)
    assert metrics["pose_source"] == "mediapipe" and metrics["pose_pck"] > 0.5, metrics["pose_pck"]
    assert not any(r.startswith("pose_pck") for r in result.manifest["qa"]["reasons"])
