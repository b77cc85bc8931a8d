"""Campaigns on a real local Ray cluster: windows spread over workers, resume, worker faults."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest

from farm import cli
from farm.config import load_config
from farm.media.decode import read_frames
from farm.runtime.campaign import run_campaign
from farm.shot.render import render_shot
from tests.test_qa import campaign_rows
from tests.test_render import MEDIA, drawing_shot

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _campaign(tmp_path, shots: str, name: str = "c") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ndefaults: [output.size=96, output.pose_preview=false]\nshots:\n{shots}")
    return str(path)


def _drawing(shot_id: str, motion: str, drawing: str = "char1") -> str:
    names = {"char1": ("childdrawing_char1.png", "childdrawing_char1_skeleton.yaml", "childdrawing_char1_mask.png"),
             "char3": ("childdrawing_char3_candycorn.png", "childdrawing_char3_skeleton.yaml", "childdrawing_char3_candycorn_mask.png")}
    image, skeleton, mask = names[drawing]
    return (f"  - {{id: {shot_id}, motion: {MEDIA / motion}, character: {MEDIA / image}, "
            f"skeleton: {MEDIA / skeleton}, mask: {MEDIA / mask}}}\n")


def test_rerun_of_a_finished_campaign_renders_nothing(tmp_path, capsys):
    shots = _drawing("please", "gesture_asl_please.mkv") + _drawing("walk", "walk_two_people_toward_camera.gif", "char3")
    campaign = _campaign(tmp_path, shots)
    out = str(tmp_path / "out")
    assert cli.run(["submit", campaign, "-o", out]) == 0
    first = json.loads((tmp_path / "out" / "c" / "campaign.json").read_text())["counts"]
    assert first["shots_succeeded"] == 2 and first["windows_rendered"] == 2 + 1 and first["windows_reused"] == 0
    capsys.readouterr()
    assert cli.run(["submit", campaign, "-o", out]) == 0
    again = json.loads((tmp_path / "out" / "c" / "campaign.json").read_text())["counts"]
    assert again["windows_rendered"] == 0 and again["shots_reused"] == 2 and again["windows_reused"] == 3
    assert "nothing to render" in capsys.readouterr().out
    assert cli.run(["status", str(tmp_path / "out" / "c")]) == 0
    assert "2/2 shots done: 0 rendered, 2 reused, 0 failed" in capsys.readouterr().out


def test_long_video_in_many_windows_over_two_workers_matches_one_window(tmp_path, shared_data):
    video = shared_data / "long_people_walk_in_one_by_one.mp4"
    common = ["output.size=64", "output.pose_preview=false", "pose.hands=false", "pose.face=false"]
    windows = load_config(common)
    whole = load_config([*common, "window.length=2000", "qa.max_window_length=2000"])
    # One after the other: the one-window render would otherwise keep a worker to itself.
    (split,) = run_campaign([(drawing_shot(video, "char3", shot_id="windows"), windows)], tmp_path)
    (single,) = run_campaign([(drawing_shot(video, "char3", shot_id="whole"), whole)], tmp_path)
    assert [split.status, single.status] == ["succeeded", "succeeded"], [split.error, single.error]
    assert len(split.manifest["windows"]) >= 4 and len(single.manifest["windows"]) == 1
    assert len({w["worker"] for w in split.manifest["windows"]}) == 2  # both workers rendered windows
    a, b = read_frames(split.video), read_frames(single.video)
    assert len(a) == len(b) == 1394
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0


def _kill_first_window_worker(stop: threading.Event, killed: list[int], shot_id: str) -> None:
    """SIGKILL the first worker seen rendering a window of `shot_id` (their process title is "ray::window <shot> <index>")."""
    while not stop.is_set() and not killed:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if proc.info["cmdline"] and " ".join(proc.info["cmdline"]).startswith(f"ray::window {shot_id} "):
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed.append(proc.info["pid"])
                return
        time.sleep(0.01)


def test_a_worker_killed_mid_window_is_replaced_and_the_output_is_the_same(tmp_path):
    cfg = load_config(["output.size=384", "window.length=12", "window.overlap=2", "output.pose_preview=false"])
    reference = render_shot(drawing_shot("gesture_asl_please.mkv", "char1", shot_id="ref"), cfg, tmp_path / "ref")
    assert reference.status == "succeeded", reference.error
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_window_worker, args=(stop, killed, "ref"))
    killer.start()
    try:
        (result,) = run_campaign([(drawing_shot("gesture_asl_please.mkv", "char1", shot_id="ref"), cfg)], tmp_path / "ray")
    finally:
        stop.set()
        killer.join()
    assert killed, "no window worker was seen running"
    assert result.status == "succeeded", result.error
    assert not psutil.pid_exists(killed[0])
    # The same frames: QA measures each frame as it goes to the encoder, so its table is the same
    # byte for byte only if the windows, the stitch and the watermark are. The encoded videos are
    # compared within x264's own noise: about 1 run in 40, x264 in a long-lived worker process
    # makes one different decision on identical frames, and that change carries through the GOP
    # (seen: max 19 levels from frame 5 on, the QA table identical).
    assert (result.folder / "qa.parquet").read_bytes() == (reference.folder / "qa.parquet").read_bytes()
    assert (result.folder / "poses" / "target.parquet").read_bytes() == (reference.folder / "poses" / "target.parquet").read_bytes()
    ours, theirs = read_frames(result.video).astype(np.float64), read_frames(reference.video).astype(np.float64)
    assert ours.shape == theirs.shape
    worst = min(10 * np.log10(255.0**2 / max(((a - b) ** 2).mean(), 1e-12)) for a, b in zip(ours, theirs))
    assert worst > 40.0, f"a frame differs from the reference at {worst:.1f} dB PSNR"


def test_campaign_with_s3_inputs_and_outputs(tmp_path, s3_bucket, s3_endpoint, capsys):
    store, bucket = s3_bucket
    inputs = {}
    for name in ("gesture_asl_please.mkv", "childdrawing_char1.png", "childdrawing_char1_skeleton.yaml", "childdrawing_char1_mask.png"):
        inputs[name] = f"{bucket}/inputs/{name}"
        store.put_file(MEDIA / name, inputs[name])
    campaign = tmp_path / "cloud.yaml"
    campaign.write_text(
        f"""name: cloud
defaults: [output.size=96]
shots:
  - id: please
    motion: {inputs['gesture_asl_please.mkv']}
    character: {inputs['childdrawing_char1.png']}
    skeleton: {inputs['childdrawing_char1_skeleton.yaml']}
    mask: {inputs['childdrawing_char1_mask.png']}
"""
    )
    out = f"{bucket}/renders"
    storage = [f"storage.endpoint_url={s3_endpoint}", f"storage.cache_dir={tmp_path / 'cache'}"]  # the operator's, never a campaign's
    assert cli.run(["submit", str(campaign), "-o", out, *storage]) == 0, capsys.readouterr().err
    keys = set(store.list(f"{out}/cloud"))
    shot = f"{out}/cloud/shots/please"
    assert {f"{shot}/video.mp4", f"{shot}/manifest.json", f"{shot}/pose_preview.mp4", f"{shot}/poses/driving.parquet",
            f"{out}/cloud/campaign.json", f"{out}/cloud/campaign.parquet"} <= keys
    assert not any("/windows/" in key or "/artifacts/" in key for key in keys)  # working files go once the shot is done
    manifest = json.loads(store.get_bytes(f"{shot}/manifest.json"))
    assert manifest["status"] == "succeeded" and manifest["inputs"]["motion"]["uri"] == inputs["gesture_asl_please.mkv"]
    video = store.fetch(f"{shot}/video.mp4", tmp_path / "check")
    assert len(read_frames(video)) == 73
    # The reports are in the bucket; `farm report` rebuilds them from the bucket alone.
    assert {f"{shot}/report.html", f"{shot}/thumb.jpg", f"{shot}/qa.parquet", f"{out}/cloud/report.html"} <= keys
    assert f"report: {out}/cloud/report.html" in capsys.readouterr().out
    for key in (f"{shot}/report.html", f"{out}/cloud/report.html"):
        store.delete(key)
    assert cli.run(["report", f"{out}/cloud", f"storage.endpoint_url={s3_endpoint}"]) == 0
    assert f"please: {shot}/report.html" in capsys.readouterr().out
    page = store.get_bytes(f"{out}/cloud/report.html").decode()
    # The campaign page's thumbnail is the shot's thumb.jpg, beside it in the bucket (shots/please/).
    assert [(r["shot_id"], r["thumb"], r["report"]) for r in campaign_rows(page)] == [("please", 1, 1)]
    assert 'src="shots/please/thumb.jpg"' in page and "data:image" not in page
    shot_page = store.get_bytes(f"{shot}/report.html").decode()
    assert "Shot please" in shot_page and manifest["artifacts"][0]["sha256"] in shot_page
    assert cli.run(["status", f"{out}/cloud", f"storage.endpoint_url={s3_endpoint}"]) == 0
    status = capsys.readouterr().out
    assert "1/1 shots done: 1 rendered" in status and "0 need a re-render" in status and "│ ok" in status
    # A second run finds the finished shot in the bucket and renders nothing.
    assert cli.run(["submit", str(campaign), "-o", out, *storage]) == 0
    counts = json.loads(store.get_bytes(f"{out}/cloud/campaign.json"))["counts"]
    assert counts["windows_rendered"] == 0 and counts["shots_reused"] == 1


def test_a_window_whose_worker_keeps_dying_fails_its_shot_and_the_rest_completes(tmp_path):
    slow = load_config(["output.size=512", "window.length=8", "window.overlap=1", "output.pose_preview=false"])
    quick = load_config(["output.size=96", "output.pose_preview=false"])
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_window_worker, args=(stop, killed, "doomed"))
    killer.start()
    try:
        doomed, fine = run_campaign(
            [(drawing_shot("gesture_asl_please.mkv", "char1", shot_id="doomed"), slow),
             (drawing_shot("walk_two_people_toward_camera.gif", "char3", shot_id="fine"), quick)],
            tmp_path, max_retries=0,  # no second chance: the first death is final
        )
    finally:
        stop.set()
        killer.join()
    assert killed, "no window worker was seen running"
    assert fine.status == "succeeded" and fine.video is not None
    assert doomed.status == "failed" and "doomed" in doomed.error and "worker process died 1 time" in doomed.error
    assert not (tmp_path / "doomed" / "video.mp4").exists()


def test_identical_shots_in_one_campaign_render_once(tmp_path):
    cfg = load_config(["output.size=96", "output.pose_preview=false"])
    shot = drawing_shot("walk_two_people_toward_camera.gif", "char3")
    first, second = run_campaign([(shot, cfg), (shot, cfg)], tmp_path)
    assert sorted([first.status, second.status]) == ["reused", "succeeded"]
    assert first.shot_id == second.shot_id and first.video == second.video
    assert [p.name for p in tmp_path.iterdir()] == [first.shot_id]


def test_a_campaign_draws_the_pose_preview_while_the_windows_render(tmp_path):
    """The preview depends on the plan alone: its own task draws it beside the windows (3 s each
    here, a GPU model's pace), not the finish after them; it is the preview `farm render` draws."""
    shot = drawing_shot("gesture_asl_please.mkv", "char1", shot_id="beside")
    slow = load_config(["output.size=96", "runtime.backend_wrapper=tests.wrappers:slow_windows"])
    (result,) = run_campaign([(shot, slow)], tmp_path / "ray")
    assert result.status == "succeeded", result.error
    manifest = result.manifest
    windows_end = max(w["started"] + w["seconds"] for w in manifest["windows"])
    preview = manifest["preview"]
    assert preview["started"] + preview["seconds"] < windows_end
    assert manifest["timings"]["artifacts"] >= preview["seconds"]
    assert not (result.folder / "artifacts").exists()  # its working copy goes with the commit

    local = render_shot(shot, load_config(["output.size=96"]), tmp_path / "local")
    ours, theirs = read_frames(result.folder / "pose_preview.mp4"), read_frames(local.folder / "pose_preview.mp4")
    assert len(ours) == len(theirs) == 73
    worst = max(np.abs(a.astype(np.int16) - b.astype(np.int16)).max() for a, b in zip(ours, theirs))
    assert worst <= 2, f"the campaign's preview differs from farm render's by {worst} levels"
