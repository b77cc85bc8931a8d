"""The motion library as named, rights-carrying assets (`farm library add/list`, `motion: library:NAME`)
and the order shots start in (priority, then the longest motion first) (issue 13.1, 13.3)."""
from __future__ import annotations

import json

import pytest

from farm import cli
from farm.campaign import load_campaign
from farm.config import load_config
from farm.errors import FarmError
from farm.runtime.campaign import admission_order
from tests.test_render import MEDIA, drawing_shot
from tests.test_runtime import _campaign, _drawing

WALK = "walk_two_people_toward_camera.gif"  # 35 frames at 12 fps: 2.91 s
PLEASE = "gesture_asl_please.mkv"  # 73 frames at 30 fps: 2.4 s
RIGHTS = ["--rights", "motion_source=Intel sample-videos face-demographics-walking.gif", "--rights", "consent=published sample",
          "--rights", "license=CC-BY-4.0"]


@pytest.mark.usefixtures("ray_cluster")
def test_a_named_motion_is_added_once_and_every_shot_that_names_it_renders_it_with_its_rights(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.run(["library", "add", str(MEDIA / WALK), "--name", "walk", "--tags", "walk, two people", *RIGHTS, "-o", out]) == 0
    record = json.loads((tmp_path / "out" / "library" / "motions" / "walk" / "motion.json").read_text())
    assert (record["frames"], record["duration_s"], record["tags"]) == (35, 2.91, ["walk", "two people"])
    assert record["rights"] == {"motion_source": "Intel sample-videos face-demographics-walking.gif",
                                "motion_consent": "published sample", "license": "CC-BY-4.0"}
    assert (tmp_path / "out" / "library" / "motions" / "walk" / "motion.gif").read_bytes() == (MEDIA / WALK).read_bytes()
    # The same name again is refused; --force replaces it.
    capsys.readouterr()
    assert cli.run(["library", "add", str(MEDIA / PLEASE), "--name", "walk", "-o", out]) == 2
    assert "library:walk" in capsys.readouterr().err
    assert cli.run(["library", "list", "-o", out, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == ["walk"] and listed[0]["sha256"] == record["sha256"]

    # A campaign names it; the shot's own rights win over the motion's, the others are filled in.
    shot = _drawing("w", WALK, "char3").replace(str(MEDIA / WALK), "library:walk").replace(
        "}", ", rights: {character_source: AnimatedDrawings char3, character_consent: drawn for the examples, license: MIT}}")
    assert cli.run(["submit", _campaign(tmp_path, shot), "-o", out]) == 0
    manifest = json.loads((tmp_path / "out" / "c" / "shots" / "w" / "manifest.json").read_text())
    assert manifest["rights"] == {"motion_source": "Intel sample-videos face-demographics-walking.gif",
                                  "motion_consent": "published sample", "license": "MIT",
                                  "character_source": "AnimatedDrawings char3", "character_consent": "drawn for the examples"}
    assert manifest["inputs"]["motion"]["library"] == "walk"
    assert manifest["inputs"]["motion"]["sha256"] == record["sha256"]
    counts = json.loads((tmp_path / "out" / "c" / "campaign.json").read_text())["counts"]
    assert (counts["poses_extracted"], counts["poses_reused"]) == (0, 1)  # extracted by `library add`


def test_a_name_the_library_lacks_stops_the_campaign_before_anything_runs(tmp_path, capsys):
    shots = _drawing("ok", WALK, "char3") + _drawing("gone", WALK, "char3").replace(str(MEDIA / WALK), "library:gone")
    campaign = _campaign(tmp_path, shots)
    out = tmp_path / "out"
    for command in (["submit", campaign, "-o", str(out), "--check"], ["submit", campaign, "-o", str(out)]):
        capsys.readouterr()
        assert cli.run(command) == 2
        err = capsys.readouterr().err
        assert "shot gone: motion library:gone" in err and f"farm library add VIDEO --name gone -o {out}" in err
    assert not (out / "c").exists()
    # A name that could never be one is refused where the campaign writes it.
    (tmp_path / "bad.yaml").write_text(f"name: bad\nshots:\n{shots.replace('library:gone', 'library:Gone Dance')}")
    with pytest.raises(FarmError, match=r"bad.yaml line 4: shots\[1\].motion: 'Gone Dance' is not a motion name"):
        load_campaign(tmp_path / "bad.yaml")


def test_shots_start_by_priority_then_longest_motion_first_and_campaigns_of_a_folder_by_priority(tmp_path, capsys):
    cfg = load_config([])
    items = [(drawing_shot(PLEASE, "char1"), cfg), (drawing_shot(WALK, "char3"), cfg), (drawing_shot(PLEASE, "char3"), cfg),
             (drawing_shot(MEDIA / "missing.mp4", "char1"), cfg), (drawing_shot(PLEASE, "char1"), FarmError("x", "y", "z"))]
    # Equal priority: the 2.91 s walk first, then the 2.4 s clips as written; what cannot be read last.
    assert admission_order(items) == [1, 0, 2, 3, 4]
    assert admission_order(items, [0, 0, 5, 0, 0]) == [2, 1, 0, 3, 4]
    assert admission_order(items, durations={str(MEDIA / "missing.mp4"): 9.0}) == [3, 1, 0, 2, 4]

    (tmp_path / "night").mkdir()
    shot = _drawing("w", WALK, "char3")
    for name, priority in (("a", 0), ("b", 5), ("c", 1)):
        (tmp_path / "night" / f"{name}.yaml").write_text(f"name: {name}\npriority: {priority}\nshots:\n{shot}")
    capsys.readouterr()
    assert cli.run(["submit", str(tmp_path / "night"), "--check", "-o", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    assert said.index("campaign b:") < said.index("campaign c:") < said.index("campaign a:")
    (tmp_path / "p.yaml").write_text(f"name: p\nshots:\n{shot.replace('}', ', priority: high}')}")
    with pytest.raises(FarmError, match=r"shots\[0\].priority: 'high' is not a whole number"):
        load_campaign(tmp_path / "p.yaml")
