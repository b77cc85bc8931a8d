"""Sweeps: Hydra's sweep grammar expanded into one batch, comparison videos, the metrics table."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from farm import cli
from farm.errors import FarmError
from farm.media.decode import read_frames
from farm.media.probe import probe_video
from farm.sweep import LABEL_HEIGHT, Setting, expand, variant_ids
from tests.test_runtime import _campaign, _drawing


def test_expand_follows_hydras_sweep_grammar():
    fixed, settings = expand(["match.mode=video,image", "output.size=96", "match.motion_weight=range(0.3,1.0,0.3)",
                              "seed=choice(1,2)"])
    assert fixed == ["output.size=96"]
    assert len(settings) == 2 * 3 * 2
    assert settings[0].overrides == ("match.mode=video", "match.motion_weight=0.3", "seed=1")
    assert settings[1].overrides == ("match.mode=video", "match.motion_weight=0.3", "seed=2")  # the last key fastest
    assert settings[5].label == "mode=video, motion_weight=0.9, seed=2"  # range's 0.8999999999999999, labelled
    assert settings[5].slug == "video-0.9-2"
    with pytest.raises(FarmError, match="no key sweeps"):
        expand(["match.mode=video"])
    with pytest.raises(FarmError, match="sweep grammar"):
        expand(["match.mode=video,,"])


def test_variant_ids_are_readable_valid_and_distinct():
    _, settings = expand(["match.mode=video,image", "match.motion_weight=0.3,0.9"])
    assert variant_ids("please", settings) == ["please--video-0.3", "please--video-0.9", "please--image-0.3", "please--image-0.9"]
    long = variant_ids("a" * 60, settings)
    assert long[3] == "a" * 50 + "-" + hashlib.sha256(b"a" * 60).hexdigest()[:8] + "--s04" and all(len(x) <= 64 for x in long)
    # Values that read the same in an id (the sign, a space): numbered instead, never merged.
    _, clash = expand(["seed=-5,5"])
    assert variant_ids("please", clash) == ["please--s01", "please--s02"]
    assert variant_ids("please", [Setting(("prompt=a b",), "prompt=a b"), Setting(("prompt=a_b",), "prompt=a_b")])[0] == "please--s01"


def test_sweep_renders_every_setting_in_one_batch_and_compares_them(tmp_path, ray_cluster, monkeypatch, capsys):
    import farm.runtime.campaign as runtime

    batches = []
    real = runtime.run_campaign

    def recording(items, *args, **kwargs):
        batches.append([shot.shot_id for shot, _ in items])
        return real(items, *args, **kwargs)

    monkeypatch.setattr(runtime, "run_campaign", recording)
    shots = _drawing("please", "gesture_asl_please.mkv") + _drawing("walk", "walk_two_people_toward_camera.gif", "char3")
    campaign = _campaign(tmp_path, shots)
    out = tmp_path / "out"
    argv = ["sweep", campaign, "-o", str(out), "match.mode=video,image", "match.motion_weight=0.3,0.9"]
    assert cli.run(argv) == 0, capsys.readouterr().err
    # ONE batch: 2 shots x 4 settings handed to Ray together.
    assert len(batches) == 1 and len(batches[0]) == 8
    assert sorted(batches[0]) == sorted(f"{s}--{m}-{w}" for s in ("please", "walk") for m in ("video", "image") for w in ("0.3", "0.9"))
    folder = out / "c-sweep"
    rows = pq.read_table(folder / "campaign.parquet").to_pylist()
    assert len(rows) == 8 and all(r["status"] == "succeeded" for r in rows)
    by_id = {r["shot_id"]: r for r in rows}
    assert by_id["please--image-0.3"]["sweep_of"] == "please"
    assert by_id["please--image-0.3"]["settings"] == "match.mode=image match.motion_weight=0.3"
    for row in rows:  # the settings are what was rendered, and every metric is in the table
        manifest = json.loads((folder / "shots" / row["shot_id"] / "manifest.json").read_text())
        mode, weight = row["shot_id"].split("--")[1].split("-")
        assert manifest["config"]["match"] == {"mode": mode, "motion_weight": float(weight), "anchor": "auto"}
        assert row["pose_pck"] is not None and row["seam_score"] is not None
    # A comparison per shot: a 2x2 grid, every cell a different render, as long as the shot.
    printed = capsys.readouterr().out  # results on stdout
    for shot, frames in (("please", 73), ("walk", 35)):
        video = folder / "comparisons" / f"{shot}.mp4"
        assert f"comparison {shot}: {video}" in printed
        probe = probe_video(video)
        assert probe.frame_count == frames
        grid = read_frames(video, frames // 2, frames // 2 + 1)[0].astype(int)
        cell_h, cell_w = probe.height // 2 - LABEL_HEIGHT, probe.width // 2
        cells = [grid[r * (cell_h + LABEL_HEIGHT) + LABEL_HEIGHT :][:cell_h, c * cell_w :][:, :cell_w]
                 for r in range(2) for c in range(2)]
        assert all(cell.std() > 10 for cell in cells)  # a picture, not the empty background
        differences = [np.abs(a - b).mean() for i, a in enumerate(cells) for b in cells[i + 1 :]]
        assert min(differences) > 1.0
    # The same sweep again renders nothing; one more value renders only the new settings.
    assert cli.run(argv) == 0
    assert json.loads((folder / "campaign.json").read_text())["counts"]["windows_rendered"] == 0
    assert cli.run([*argv[:-1], "match.motion_weight=0.3,0.9,0.6"]) == 0
    counts = json.loads((folder / "campaign.json").read_text())["counts"]
    assert counts["shots_succeeded"] == 4 and counts["shots_reused"] == 8
