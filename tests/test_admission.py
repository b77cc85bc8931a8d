"""Large campaigns (issue 13): streaming admission (a campaign plans its shots only as fast as the
generators take their windows, and the driver reads only each plan's head) and the motion library
(a motion's poses extracted once per output folder)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from farm import cli
from farm.backends.puppet import PuppetBackend
from farm.config import load_config
from farm.pose.extract import PoseOptions, extract_poses
from farm.pose.library import MotionEntry, keep, library_key, lookup
from farm.pose.store import read_parquet
from farm.records import Progress
from farm.runtime.campaign import admission_bound, run_campaign
from farm.shot.plan import plan_shot
from farm.shot.planned import PlanHead, ShotPlan
from farm.storage import Storage
from tests.test_render import MEDIA, drawing_shot
from tests.test_runtime import _campaign, _drawing

WALK = "walk_two_people_toward_camera.gif"  # 35 frames: one window


class _InFlight(Progress):
    """Counts, from the outside, the shots between their first state and their result."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.finished: set[int] = set()
        self.most = 0
        self.told: tuple[int, int] | None = None

    def shot_state(self, position, state, windows_done=0, windows=None) -> None:
        self.started.add(position)
        self.most = max(self.most, len(self.started - self.finished))

    def shot_done(self, result, position=None) -> None:
        self.finished.add(position)

    def admission(self, bound, peak, driver=None) -> None:
        self.told = (bound, peak)


@pytest.mark.usefixtures("ray_cluster")
def test_no_more_shots_than_the_bound_are_in_flight_and_every_shot_renders_in_order(tmp_path):
    items = [(drawing_shot(WALK, "char3"), load_config(["output.size=96", "output.pose_preview=false", f"seed={seed}"]))
             for seed in range(5)]
    watched = _InFlight()
    results = run_campaign(items, tmp_path, max_in_flight=2, progress=watched)
    assert [r.status for r in results] == ["succeeded"] * 5, [r.error for r in results]
    assert [r.manifest["config"]["seed"] for r in results] == list(range(5))  # in the order given
    assert watched.told == (2, 2) and watched.most == 2
    assert watched.finished == set(range(5))


@pytest.mark.usefixtures("ray_cluster")
def test_the_default_bound_is_twice_the_generator_slots_and_the_campaign_records_it(tmp_path, capsys):
    # The session's cluster: 2 CPUs and 2 (fake) GPUs, so 2 generator slots either way.
    assert admission_bound() == 4
    shots = "".join(_drawing(f"walk{i}", WALK, "char3").replace("}", f", overrides: [seed={i}]}}") for i in range(3))
    campaign = _campaign(tmp_path, shots)
    assert cli.run(["submit", campaign, "-o", str(tmp_path / "out"), "runtime.max_shots_in_flight=1"]) == 0
    doc = json.loads((tmp_path / "out" / "c" / "campaign.json").read_text())
    assert doc["counts"]["shots_succeeded"] == 3
    assert {k: doc["admission"][k] for k in ("max_shots_in_flight", "peak_shots_in_flight")} == {
        "max_shots_in_flight": 1, "peak_shots_in_flight": 1}
    driver = doc["admission"]["driver"]  # what the driver spent on each event of the run (a plan, a window, ...)
    assert driver["events"] >= 3 * 4 and 0 < driver["median_ms"] <= driver["p90_ms"] and driver["busy_seconds"] > 0
    # A campaign file cannot raise it: runtime.* is the operator's (DESIGN §12).
    (tmp_path / "mine.yaml").write_text(f"name: mine\ndefaults: [runtime.max_shots_in_flight=1000]\nshots:\n{shots}")
    capsys.readouterr()
    assert cli.run(["submit", str(tmp_path / "mine.yaml"), "-o", str(tmp_path / "out"), "--check"]) == 2
    assert "runtime.max_shots_in_flight" in capsys.readouterr().err


def test_the_driver_reads_a_plan_head_a_small_part_of_the_plan(tmp_path):
    plan = plan_shot(drawing_shot("gesture_asl_please.mkv", "char1"), load_config(["output.pose_preview=false"]), tmp_path,
                     PuppetBackend.spec)
    assert isinstance(plan, ShotPlan)
    head = plan.head()
    assert type(head) is PlanHead and not hasattr(head, "targets") and not hasattr(head, "character")
    assert head.segments == plan.segments and head.frame_count == len(plan.targets) == 73
    assert [head.previous_window(w) for w in head.windows] == [plan.previous_window(w) for w in plan.windows]
    small, whole = len(pickle.dumps(head)), len(pickle.dumps(plan))
    assert small * 20 < whole, (small, whole)


@pytest.mark.usefixtures("ray_cluster")
def test_a_motion_is_extracted_once_per_output_and_every_later_shot_and_campaign_reuses_it(tmp_path):
    """Sixty shots over two motions extract two poses; a second campaign into the same OUT extracts
    none. The simulated backend (a few milliseconds a frame) keeps sixty shots cheap; the poses are
    the same whichever backend reads them."""
    simulated = ["backend=simulated", "backend.seconds_per_frame=0.002", "backend.load_seconds=0"]

    def shots(seeds):
        return "".join(_drawing(f"{name}{seed}", motion, drawing).replace("}", f", overrides: [seed={seed}]}}")
                       for seed in seeds for name, motion, drawing in (("walk", WALK, "char3"),
                                                                       ("please", "gesture_asl_please.mkv", "char1")))
    out = tmp_path / "out"
    assert cli.run(["submit", _campaign(tmp_path, shots(range(30)), "first"), "-o", str(out), *simulated]) == 0
    counts = json.loads((out / "first" / "campaign.json").read_text())["counts"]
    assert (counts["shots_succeeded"], counts["poses_extracted"], counts["poses_reused"]) == (60, 2, 58)
    entries = sorted((out / "library" / "poses").iterdir())
    assert len(entries) == 2 and all((e / "info.json").is_file() and (e / "pose.parquet").is_file() for e in entries)
    # A shot that took the library's poses has the poses the extracting shot had, to the bit.
    poses = [read_parquet(out / "first" / "shots" / f"walk{seed}" / "poses" / "driving.parquet") for seed in range(30)]
    assert all(np.array_equal(p.body, poses[0].body) and np.array_equal(p.face, poses[0].face) for p in poses[1:])
    manifests = [json.loads((out / "first" / "shots" / f"walk{seed}" / "manifest.json").read_text()) for seed in range(30)]
    assert sorted(m["motion_library"]["reused"] for m in manifests) == [False] + [True] * 29
    assert "pose" not in next(m for m in manifests if m["motion_library"]["reused"])["timings"]

    assert cli.run(["submit", _campaign(tmp_path, shots([70]), "second"), "-o", str(out), *simulated]) == 0
    counts = json.loads((out / "second" / "campaign.json").read_text())["counts"]
    assert (counts["shots_succeeded"], counts["poses_extracted"], counts["poses_reused"]) == (2, 0, 2)


def test_an_entry_cut_off_before_its_info_is_never_read_and_a_campaign_cannot_take_the_library_name(tmp_path, capsys):
    poses = extract_poses(MEDIA / WALK, stop=5)
    store, root, options = Storage(), str(tmp_path / "library"), PoseOptions()
    key = library_key("sha", options, "mediapipe")
    keep(store, root, key, MotionEntry(poses, (1, "one person"), options.parts()), "walk.gif")
    found_key, found = lookup(store, root, "sha", options, "mediapipe")
    assert found_key == key and found.people == (1, "one person") and np.array_equal(found.poses.body, poses.body)
    (tmp_path / "library" / "poses" / key / "info.json").unlink()  # the writer died between the two files
    assert lookup(store, root, "sha", options, "mediapipe") is None
    (tmp_path / "library.yaml").write_text(f"name: library\nshots:\n{_drawing('walk', WALK, 'char3')}")
    assert cli.run(["submit", str(tmp_path / "library.yaml"), "-o", str(tmp_path / "out")]) == 2
    assert "motion library" in capsys.readouterr().err and not (tmp_path / "out").exists()
