"""A campaign on a three-node local Ray cluster (tests/multinode.py, in its own process): windows
spread over the GPU nodes, and a node removed mid-campaign (the windows, segments and plans it ran
with it) costs no shot and changes no frame (issue 13.5)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from farm.media.decode import read_frames
from tests.conftest import REPO
from tests.test_cluster import _fresh_process_env


def test_a_node_lost_mid_campaign_costs_no_shot_and_changes_no_frame(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tests" / "multinode.py"), str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO, env=_fresh_process_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.splitlines()[-1])
    clean, lost = runs["clean"], runs["lost"]
    assert {s["status"] for s in [*clean.values(), *lost.values()]} == {"succeeded"}, runs
    # One generator per GPU, one GPU per worker node: two window workers means both nodes rendered.
    assert len({w for s in clean.values() for w in s["workers"]}) == 2
    # The node went while it rendered a window (and, mostly, planned a shot): the cluster finished without it.
    assert "window" in runs["removed_while"] and runs["alive_nodes"] == 2, runs
    for shot in clean:
        a, b = (read_frames(tmp_path / run / shot / "video.mp4") for run in ("clean", "lost"))
        assert len(a) == 73 and np.array_equal(a, b), shot
    # A generator that hangs mid-window (SIGSTOP) on a newly joined node: after runtime.window_timeout_s
    # its window is a failed try, rendered again elsewhere; its node, blocked after one failure, gets no more.
    hung = runs["hung"]
    assert runs["stopped"] and {s["status"] for s in hung.values()} == {"succeeded"}, runs
    (entry,) = runs["bad_nodes"]
    assert entry["node"] == runs["hung_node"] and "window_timeout_s (3 s)" in entry["last_failure"], entry
    (trouble,) = [t for s in hung.values() for t in s["failed_tries"]]
    assert trouble["node"] == runs["hung_node"] and "no result within runtime.window_timeout_s" in trouble["reason"], hung
    assert runs["hung_node"] not in {n for s in hung.values() for n in s["nodes"]}, hung
    for shot in clean:
        a, b = (read_frames(tmp_path / run / shot / "video.mp4") for run in ("clean", "hung"))
        assert np.array_equal(a, b), shot
