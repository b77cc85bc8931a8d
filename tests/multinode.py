"""A campaign on a three-node local Ray cluster (`ray.cluster_utils.Cluster`), run in its own process
by tests/test_multinode.py (Ray starts once per process, and the test session has its own cluster).

    python tests/multinode.py OUT

The head node has one CPU; two worker nodes have one CPU and one (fake) GPU each. The campaign:
three simulated-backend shots of the ASL clip, two in flight at a time (so later shots plan while
earlier ones render), with pose extraction split into chunks of 30 frames. It runs twice on the
same cluster: into OUT/clean, then into OUT/lost while the first worker node is removed as soon as
it renders a window and, if it can be seen within a few seconds, plans a shot too. Then a new
worker node joins and it runs a third time, into OUT/hung, with a 3 s window timeout and a node
blocked after one failure: the generator process of one worker node is stopped (SIGSTOP, a hung
GPU) as soon as it renders a window. Prints one JSON line: per run, each shot's status, error,
window workers and nodes (and failed tries); what the removed node was running; the node whose
generator hung, the run's bad nodes; the live nodes at the end.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

SHOTS = 3
OVERRIDES = ["backend=simulated", "backend.seconds_per_frame=0.04", "backend.load_seconds=0.2", "output.size=96",
             "output.pose_preview=false", "runtime.pose_chunk_frames=30", "window.length=33"]


def _running_on(node) -> set[str]:
    """The Ray task names (process titles) that the node's worker processes run now."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    names = set()
    for proc in raylet.children(recursive=True):
        try:
            title = proc.cmdline()[0] if proc.cmdline() else ""
        except psutil.Error:
            continue
        if title.startswith("ray::"):
            names.add(title.removeprefix("ray::").split(" ")[0])
    return names


def _remove_mid_window(cluster, node, seen: dict, stop: threading.Event) -> None:
    """Remove `node` once it renders a window, waiting up to 10 s more for it to plan a shot too
    (a plan task, with the pose chunks and people count pinned to its node)."""
    first_window = None
    while not stop.is_set():
        names = _running_on(node)
        if "window" in names and first_window is None:
            first_window = time.monotonic()
        if first_window is not None:
            seen.setdefault("names", set()).update(names)
            if seen["names"] & {"plan", "_pose_chunk"} or time.monotonic() - first_window > 10:
                seen["at"] = sorted(seen.pop("names"))
                cluster.remove_node(node)
                return
        time.sleep(0.05)


def _hang_mid_window(node, seen: dict, stop: threading.Event) -> None:
    """Stop (SIGSTOP) the process of `node` that renders a window, once one does: its generator hangs."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    while not stop.is_set():
        for proc in raylet.children(recursive=True):
            try:
                if proc.cmdline() and proc.cmdline()[0].startswith("ray::window"):
                    proc.send_signal(signal.SIGSTOP)
                    seen["stopped"] = proc.cmdline()[0]
                    return
            except psutil.Error:
                continue
        time.sleep(0.05)


def main(out: str) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)

    from farm.config import load_config
    from farm.records import Progress
    from farm.runtime.campaign import run_campaign
    from tests.test_render import drawing_shot

    items = [(drawing_shot("gesture_asl_please.mkv", "char1", shot_id=f"s{i}"), load_config([*OVERRIDES, f"seed={i}"]))
             for i in range(SHOTS)]

    def shots(results) -> dict:
        return {r.shot_id: {"status": r.status, "error": r.error,
                            "workers": sorted({w["worker"] for w in r.manifest.get("windows", [])}),
                            "nodes": [w.get("node") for w in r.manifest.get("windows", [])],
                            "failed_tries": [t for w in r.manifest.get("windows", []) for t in w.get("failed_tries", [])]}
                for r in results}

    done = {"clean": shots(run_campaign(items, Path(out) / "clean", max_retries=3, max_in_flight=2))}
    seen: dict = {}
    stop = threading.Event()
    threading.Thread(target=_remove_mid_window, args=(cluster, workers[0], seen, stop), daemon=True).start()
    try:
        done["lost"] = shots(run_campaign(items, Path(out) / "lost", max_retries=3, max_in_flight=2))
    finally:
        stop.set()
    done.update(removed_while=seen.get("at"), alive_nodes=sum(1 for n in ray.nodes() if n["Alive"]))

    hanging = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    blocked: list = []

    class Told(Progress):  # what the run tells of a blocked node
        def node_blocked(self, node, entry):
            blocked.append(entry)

    hung: dict = {}
    stop = threading.Event()
    threading.Thread(target=_hang_mid_window, args=(hanging, hung, stop), daemon=True).start()
    try:
        done["hung"] = shots(run_campaign(items, Path(out) / "hung", max_retries=3, max_in_flight=2, progress=Told(),
                                          window_timeout=3.0, bad_node_failures=1))
    finally:
        stop.set()
    done.update(hung_node=hanging.node_id, stopped=hung.get("stopped"), bad_nodes=blocked)
    ray.shutdown()
    cluster.shutdown()
    return done


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
