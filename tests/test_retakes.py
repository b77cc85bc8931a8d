"""Automatic re-takes from QA (qa.retakes) and stopping a bad shot early (qa.abort_below): issue 16.3.

A backend wrapper (tests.wrappers, through runtime.backend_wrapper) spoils a window as a sampling
model sometimes does; the window's own check finds it and the farm renders it again with the next
seed, keeping the best take."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from farm.config import load_config
from farm.errors import FarmError
from farm.media.decode import read_frames
from farm.qa.window import CONSISTENCY
from farm.records import COLUMNS, shot_row
from farm.runtime.campaign import run_campaign
from farm.shot.render import render_shot
from farm.shot.tools import make_backend
from tests.test_render import drawing_shot
from tests.wrappers import SPOILED_FRAME

# The wrapper makes the puppet sample as a model does; its windows overlap as a model's do, blended
# and colour-fitted at their joins (the puppet's own are cut end to end).
SMALL = ["output.size=192", "output.pose_preview=false", "window.overlap=8"]
SPOIL_ONCE = "runtime.backend_wrapper=tests.wrappers:spoil_first_take"
SPOIL_ALWAYS = "runtime.backend_wrapper=tests.wrappers:spoil_every_take"


def _spoiled(frame: np.ndarray) -> bool:
    """A flat field (the stitch fits its colour to the window before it, so it is not green any more)."""
    return float(frame.std()) < 6


@pytest.mark.usefixtures("ray_cluster")
def test_a_window_spoiled_on_its_first_take_is_taken_again_and_the_shot_passes(tmp_path):
    shot = drawing_shot("gesture_asl_please.mkv", "char1", shot_id="retaken")
    [retaken] = run_campaign([(shot, load_config([*SMALL, SPOIL_ONCE, "qa.retakes=2"]))], tmp_path / "on")
    [spoiled] = run_campaign([(shot, load_config([*SMALL, SPOIL_ONCE]))], tmp_path / "off")

    # Without re-takes the spoiled window is in the video and the shot is flagged.
    assert spoiled.status == "succeeded" and spoiled.manifest["qa"]["needs_rerender"]
    assert any(r.startswith("appearance_drift") for r in spoiled.manifest["qa"]["reasons"])
    assert _spoiled(read_frames(spoiled.video, SPOILED_FRAME, SPOILED_FRAME + 1)[0])

    # With them: two takes of that window, the second kept, and the shot passes.
    assert retaken.status == "succeeded", retaken.error
    assert retaken.manifest["qa"] == {"needs_rerender": False, "reasons": []}
    assert retaken.manifest["metrics"]["retakes"] == 1
    windows = retaken.manifest["windows"]
    spoilt = [w for w in windows if w["start"] <= SPOILED_FRAME < w["end"]]
    assert len(spoilt) == 1
    first, second = spoilt[0]["takes"]
    assert (first["take"], first["seed"], first["kept"], second["take"], second["seed"], second["kept"]) == (0, 0, False, 1, 1, True)
    assert first["reasons"] and any(r.startswith("appearance_drift") for r in first["reasons"]) and first["appearance_drift"] > 0.5
    assert second["reasons"] == [] and second["badness"] == 0 < first["badness"]
    assert second["prompt_fix"] is True  # appearance drift: the take asked the model for consistency
    assert spoilt[0]["seconds"] >= first["seconds"] + second["seconds"]  # the window cost both takes
    for w in windows:
        if w is not spoilt[0]:
            assert [t["take"] for t in w["takes"]] == [0] and w["takes"][0]["kept"]
    frames = read_frames(retaken.video)
    assert not any(_spoiled(f) for f in frames)
    # The campaign table and the report tell of it.
    row = shot_row(retaken)
    assert row["retakes"] == 1 and pa.Table.from_pylist([row], schema=COLUMNS).column("retakes").to_pylist() == [1]
    report = (retaken.folder / retaken.manifest["report"]).read_text()
    assert 'id="takes"' in report and "consistency prompt" in report


@pytest.mark.usefixtures("ray_cluster")
def test_abort_below_stops_a_shot_whose_first_window_fails_every_take_and_the_campaign_goes_on(tmp_path):
    bad = drawing_shot("gesture_asl_please.mkv", "char1", shot_id="bad")
    good = drawing_shot("gesture_asl_please.mkv", "char3", shot_id="good")
    small_windows = ["window.length=16", "window.overlap=4"]
    failed, fine = run_campaign([
        (bad, load_config([*SMALL, *small_windows, SPOIL_ALWAYS, "qa.retakes=1", "qa.abort_below=0.3"])),
        (good, load_config([*SMALL, *small_windows, "qa.retakes=1", "qa.abort_below=0.3"])),
    ], tmp_path)
    assert fine.status == "succeeded", fine.error
    assert fine.manifest["metrics"]["retakes"] == 0
    assert failed.status == "failed"
    error = failed.error
    assert "shot bad window 0 (frames 0-15)" in error and "below qa.abort_below (0.3) after 2 take(s)" in error, error
    rendered, total = (int(n) for n in error.split("with ")[1].split(" windows rendered")[0].split(" of "))
    assert total == len(fine.manifest["windows"]) and rendered < total  # the rest of its windows were not rendered
    assert "lower qa.abort_below" in error
    assert not failed.video_uri and not (tmp_path / "bad" / "video.mp4").exists()


def test_farm_render_takes_a_spoiled_window_again_in_its_own_process(tmp_path):
    shot = drawing_shot("gesture_asl_please.mkv", "char1", shot_id="local", prompt="a candy corn waving")
    result = render_shot(shot, load_config([*SMALL, SPOIL_ONCE, "qa.retakes=1"]), tmp_path)
    assert result.status == "succeeded" and not result.manifest["qa"]["needs_rerender"], (result.error, result.manifest["qa"])
    takes = [w["takes"] for w in result.manifest["windows"] if len(w["takes"]) > 1]
    assert len(takes) == 1 and [t["kept"] for t in takes[0]] == [False, True]
    assert not any(_spoiled(f) for f in read_frames(result.video))
    assert CONSISTENCY not in str(result.manifest.get("prompt"))  # the shot's own prompt is recorded as asked


def test_retakes_are_the_operators_setting_and_a_wrapper_must_keep_the_backends_windows():
    with pytest.raises(FarmError, match="operator setting"):
        load_config([], campaign=["qa.retakes=5"])
    with pytest.raises(FarmError, match="qa.retakes"):
        load_config(["qa.retakes=-1"])
    with pytest.raises(FarmError, match="runtime.backend_wrapper tests.wrappers:another_spec.*another spec"):
        make_backend(load_config(["runtime.backend_wrapper=tests.wrappers:another_spec"]))
    with pytest.raises(FarmError, match="cannot be imported"):
        make_backend(load_config(["runtime.backend_wrapper=tests.wrappers:nothing_here"]))
