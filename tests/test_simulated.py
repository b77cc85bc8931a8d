"""The simulated backend: a GPU model's time and resources without its weights (capacity planning)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from farm.config import load_config
from farm.errors import FarmError
from farm.media.decode import read_frames
from farm.runtime.campaign import run_campaign
from farm.shot.render import render_shot
from tests.conftest import SESSION_GPUS
from tests.test_render import drawing_shot

FAST = ["backend=simulated", "backend.seconds_per_frame=0.02", "backend.load_seconds=0.5", "output.size=128",
        "output.pose_preview=false"]


def test_a_simulated_window_takes_its_configured_time_and_draws_the_pose_over_the_character(tmp_path):
    started = time.monotonic()
    result = render_shot(drawing_shot("gesture_asl_please.mkv", "char1"), load_config(FAST), tmp_path)
    elapsed = time.monotonic() - started
    assert result.status == "succeeded", result.error
    rendered = sum(w["end"] - w["start"] for w in result.manifest["windows"])
    assert rendered >= 73 and elapsed >= 0.5 + 0.02 * rendered  # the load, then every frame of every window
    frames = read_frames(result.video)
    assert len(frames) == 73 and np.abs(np.diff(frames.astype(int), axis=0)).mean() > 0.1  # the pose moves


@pytest.mark.usefixtures("ray_cluster")
def test_a_campaign_of_simulated_shots_holds_a_fake_gpu_per_worker_and_takes_differ_by_seed(tmp_path):
    shots = [(drawing_shot("gesture_asl_please.mkv", "char1", shot_id=f"take-{seed}"), load_config([*FAST, f"seed={seed}"]))
             for seed in (1, 2)]
    started = time.monotonic()
    results = run_campaign(shots, tmp_path)
    assert [r.status for r in results] == ["succeeded", "succeeded"], [r.error for r in results]
    # Two windows a shot, 2 fake GPUs: the four windows ran two at a time, not four at once.
    frames_per_gpu = sum(w["end"] - w["start"] for r in results for w in r.manifest["windows"]) / SESSION_GPUS
    assert time.monotonic() - started >= 0.02 * frames_per_gpu
    workers = {w["worker"] for r in results for w in r.manifest["windows"]}
    assert 1 <= len(workers) <= SESSION_GPUS
    first, second = (read_frames(r.video) for r in results)
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 2  # another seed, another take


def test_what_a_simulated_gpu_costs_is_the_operators_setting():
    with pytest.raises(FarmError, match="operator setting"):
        load_config(["backend=simulated"], campaign=["backend.seconds_per_frame=1000"])
    with pytest.raises(FarmError, match="backend.seconds_per_frame"):
        load_config(["backend=simulated", "backend.seconds_per_frame=-1"])


@pytest.mark.usefixtures("ray_cluster")
def test_a_window_slower_than_the_window_timeout_is_tried_again_then_fails_its_shot_alone(tmp_path):
    slow = load_config(["backend=simulated", "backend.seconds_per_frame=0.5", "backend.load_seconds=0", "output.size=96",
                        "output.pose_preview=false"])
    quick = load_config(["backend=simulated", "backend.seconds_per_frame=0.005", "backend.load_seconds=0", "output.size=96",
                         "output.pose_preview=false"])
    shots = [(drawing_shot("gesture_asl_please.mkv", "char1", shot_id="hangs"), slow),
             (drawing_shot("gesture_asl_please.mkv", "char1", shot_id="quick"), quick)]
    started = time.monotonic()
    hangs, fine = run_campaign(shots, tmp_path, max_retries=1, window_timeout=2.0)
    assert time.monotonic() - started < 30  # two tries of 2 s, not the 36 s the slow window would take
    assert fine.status == "succeeded", fine.error
    assert hangs.status == "failed"
    assert "window 0 (frames 0-72)" in hangs.error and "runtime.window_timeout_s (2 s), 2 times" in hangs.error, hangs.error
    assert "raise runtime.window_timeout_s" in hangs.error
