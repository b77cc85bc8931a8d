"""What a new user meets in the first hour (issue 19): typos found before anything starts, results on
stdout and progress on stderr, --json for scripts, progress in output frames, deterministic backends
that say so, the prompt recorded as given."""
from __future__ import annotations

import json

import pytest

from farm import api, cli
from farm.errors import FarmError
from farm.records import Progress
from tests.test_render import MEDIA

PLEASE, CROWN = MEDIA / "gesture_asl_please.mkv", MEDIA / "childdrawing_char1.png"
DRAWING = ["--character-skeleton", str(MEDIA / "childdrawing_char1_skeleton.yaml"), "--character-mask",
           str(MEDIA / "childdrawing_char1_mask.png")]
SMALL = ["output.size=64", "output.pose_preview=false"]


def _campaign(tmp_path, shots: str, defaults: str = "[output.size=64, output.pose_preview=false]"):
    path = tmp_path / "c.yaml"
    path.write_text(f"name: c\ndefaults: {defaults}\nshots:\n{shots}")
    return path


SHOT = (f"  - {{id: please, motion: {PLEASE}, character: {CROWN}, skeleton: {MEDIA / 'childdrawing_char1_skeleton.yaml'}, "
        f"mask: {MEDIA / 'childdrawing_char1_mask.png'}}}\n")


def test_a_typo_on_the_command_line_stops_a_campaign_before_ray_starts(tmp_path, capsys):
    assert cli.run(["submit", str(_campaign(tmp_path, SHOT)), "-o", str(tmp_path / "out"), "output.szie=256"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: config output.szie: unknown key — see the keys of each group under conf/ and in README")
    assert not (tmp_path / "out").exists()


def test_a_typo_in_defaults_names_the_file_and_line(tmp_path, capsys):
    campaign = _campaign(tmp_path, SHOT, defaults="[output.size=64, match.mdoe=video]")
    assert cli.run(["submit", str(campaign), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {campaign} line 4: shots[0]: config match.mdoe: unknown key")


def test_a_sweep_typo_fails_before_any_variant(tmp_path, capsys):
    assert cli.run(["sweep", str(_campaign(tmp_path, SHOT)), "-o", str(tmp_path / "out"), "match.mdoe=video,image"]) == 2
    assert "match.mdoe" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_variants_on_a_deterministic_backend_are_refused_with_the_reason(tmp_path):
    campaign = _campaign(tmp_path, SHOT.replace("}\n", ", variants: 2}\n"))
    with pytest.raises(FarmError, match=r"c\.yaml line 4: shots\[0\]: variants: the puppet backend is deterministic"):
        api.check(campaign)


def test_render_prints_results_on_stdout_and_json_for_scripts(tmp_path, capsys):
    argv = ["render", str(PLEASE), str(CROWN), *DRAWING, "--id", "please", "--prompt", "wave", "-o", str(tmp_path), *SMALL]
    assert cli.run(argv) == 0
    printed = capsys.readouterr()
    assert f"rendered {tmp_path / 'please' / 'video.mp4'}" in printed.out and "rendered" not in printed.err
    assert cli.run([*argv, "--json"]) == 0
    printed = capsys.readouterr()
    doc = json.loads(printed.out)
    assert doc["status"] == "reused" and doc["video"] == str(tmp_path / "please" / "video.mp4") and doc["metrics"]["frames"] == 73
    manifest = json.loads((tmp_path / "please" / "manifest.json").read_text())
    assert manifest["prompt"] == manifest["config"]["prompt"] == "wave"


class _Counted(Progress):
    def __init__(self) -> None:
        self.total, self.done = 0, 0

    def frames(self, added_total: int) -> None:
        self.total += added_total

    def frames_done(self, n: int) -> None:
        self.done += n


@pytest.mark.usefixtures("ray_cluster")
def test_campaign_progress_counts_output_frames_and_status_speaks_json(tmp_path, capsys):
    counted = _Counted()
    result = api.submit(_campaign(tmp_path, SHOT), tmp_path / "out", progress=counted)
    assert result.counts["shots_succeeded"] == 1
    assert counted.total == counted.done == 73  # two windows of 48 overlapping by 8: 73 output frames, not 88
    assert cli.run(["status", result.uri, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["shots_succeeded"] == 1


@pytest.mark.usefixtures("ray_cluster")
def test_campaign_json_lists_every_shot_from_the_start_and_keeps_what_is_known_when_interrupted(tmp_path, monkeypatch, capsys):
    from farm.runtime import campaign as runtime

    seen = []
    real = runtime._ShotRun.window_done

    def window_done(self, w, value, **given):  # look at the record as a window comes in, then stop the run there
        seen.append(json.loads((tmp_path / "out" / "c" / "campaign.json").read_text()))
        real(self, w, value, **given)
        raise KeyboardInterrupt

    monkeypatch.setattr(runtime._ShotRun, "window_done", window_done)
    shots = SHOT + SHOT.replace("id: please", "id: again").replace(str(PLEASE), str(MEDIA / "gesture_asl_book.mkv"))
    assert cli.run(["submit", str(_campaign(tmp_path, shots)), "-o", str(tmp_path / "out")]) == 130
    first = seen[0]
    assert first["status"] == "running" and {s["shot"] for s in first["pending"]} == {"please", "again"}
    assert {s["state"] for s in first["pending"]} <= {"queued", "planning", "rendering"}
    after = json.loads((tmp_path / "out" / "c" / "campaign.json").read_text())
    assert after["status"] == "interrupted" and after["counts"]["shots_total"] == 2
    assert {s["shot"] for s in after["pending"]} == {"please", "again"}
    (done,) = [s for s in after["pending"] if s["windows_done"] == 1]  # the shot whose window came in first
    windows = {"please": 2, "again": 3}  # 73 and 109 frames in windows of 48 overlapping by 8
    assert done["state"] == "rendering" and done["windows"] == windows[done["shot"]]
    capsys.readouterr()
    assert cli.run(["status", str(tmp_path / "out" / "c")]) == 0
    assert f"1/{done['windows']} rendered" in capsys.readouterr().out
