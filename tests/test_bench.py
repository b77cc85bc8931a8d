"""What `make bench` measures with: the memory of every process of a run, the order of its
campaign runs, and the config its campaign figures render with (issue 15 B.2)."""
from __future__ import annotations

import json
import subprocess
import sys

from farm.bench import ALTERNATING, _mean_run

# A run that starts a child holding 300 MB of its own pages for a second, as a Ray worker holding a
# video would; measured in a fresh interpreter (this one has the test session's Ray processes under it).
RUN = """
import json, subprocess, sys, time
from farm.bench.memory import TreeMemory
HOLD = "block = bytearray(300 * 1024 * 1024); block[::4096] = b'x' * len(block[::4096]); import time; time.sleep(1.5)"
with TreeMemory(every=0.05) as memory:
    child = subprocess.Popen([sys.executable, "-c", HOLD])
    time.sleep(1.0)
    assert child.wait(timeout=30) == 0
print(json.dumps(memory.figures()))
"""


def test_memory_of_a_run_counts_the_processes_it_starts_not_the_driver_alone():
    done = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["processes_at_most"] == 2
    # The child's 300 MB show in the total, and it was the largest process...
    assert figures["all_processes_peak_pss_mb"] >= figures["driver_peak_pss_mb"] + 290
    assert figures["largest_process_peak_pss_mb"] >= 290 and "bytearray" in figures["largest_process"]
    # ...which the driver's own memory, what the bench reported before, does not hold.
    assert figures["driver_peak_pss_mb"] < 150


def test_the_one_and_two_worker_runs_alternate_and_are_averaged():
    assert ALTERNATING.count(1) == ALTERNATING.count(2) >= 2
    # each count runs once before and once after the other
    assert ALTERNATING[0] != ALTERNATING[1] and ALTERNATING[-1] != ALTERNATING[-2]
    runs = [{"wall_s": 10.0, "video": "v", "stages_s": {"pose": 4.0}, "memory": {"all_processes_peak_pss_mb": 900.0}},
            {"wall_s": 14.0, "video": "v", "stages_s": {"pose": 6.0}, "memory": {"all_processes_peak_pss_mb": 1100.0}}]
    mean = _mean_run(runs)
    assert mean["wall_s"] == 12.0 and mean["stages_s"] == {"pose": 5.0} and mean["video"] == "v"
    assert mean["memory"]["all_processes_peak_pss_mb"] == 1000.0
    assert mean["runs"] == runs


def test_the_campaign_figures_render_with_the_defaults_a_user_gets():
    from farm.bench import CAMPAIGN_OVERRIDES
    from farm.config import load_config

    bench, user = load_config(CAMPAIGN_OVERRIDES), load_config([])
    assert bench.output.pose_preview is True  # what the bench used to switch off
    assert bench == user
