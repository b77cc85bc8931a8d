"""The embedded Ray cluster: reachable from this machine only, and started anew whatever a crashed
cluster left behind. Ray starts once per process, so each test starts its clusters in fresh
processes, apart from the test session's cluster, and leaves that one alone."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from ipaddress import ip_address
from pathlib import Path

import psutil

from tests.conftest import REPO
from tests.test_render import MEDIA

# The farm's start in a fresh process: one task runs (so a worker is up too), then the listening
# sockets of the driver and every process under it (GCS, raylet, workers, agents, monitor) are
# sampled for a few seconds, as the agents' and monitors' servers come up after the task may have run.
LIST_SOCKETS = """
import json, time, psutil, ray
from farm.runtime.cluster import connect
connect(num_cpus=1)
ray.get(ray.remote(lambda: None).remote())
driver = psutil.Process()
seen = set()
for _ in range(10):
    ours = {driver.pid, *(p.pid for p in driver.children(recursive=True))}
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in ours:
            seen.add((c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()))
    time.sleep(0.5)
print(json.dumps(sorted(seen)))
ray.shutdown()
"""


def _fresh_process_env(**extra: str) -> dict:
    """This environment for a child process that must start the local cluster itself."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", **extra}


def _is_loopback(ip: str) -> bool:
    address = ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback  # ::ffff:127.0.0.1 is loopback too


def _kill_processes_of(ray_tmp: Path) -> None:
    """SIGKILL every process of the clusters kept in `ray_tmp` (their command lines name it) and the
    processes under them: a crash, as far as Ray can tell. Other clusters on the machine are left alone."""
    roots = [p for p in psutil.process_iter(["cmdline"]) if any(str(ray_tmp) in arg for arg in p.info["cmdline"] or [])]
    for proc in {q for p in roots for q in [p, *p.children(recursive=True)]}:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def test_the_local_cluster_listens_on_loopback_only():
    done = subprocess.run(
        [sys.executable, "-c", LIST_SOCKETS], capture_output=True, text=True, cwd=REPO, env=_fresh_process_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr
    sockets = json.loads(done.stdout.splitlines()[-1])
    assert {"gcs_server", "raylet"} <= {name for _, _, name in sockets}, sockets
    assert [s for s in sockets if not _is_loopback(s[0])] == []


def test_a_campaign_renders_after_a_crashed_cluster_left_its_address_behind(tmp_path):
    # Ray's temp folder of its own (kept short: Ray's socket paths must fit in 107 bytes), where both
    # the crashed cluster and the farm's process look for ray_current_cluster.
    ray_tmp = Path(tempfile.mkdtemp(prefix="farm-ray-"))
    env = _fresh_process_env(RAY_TMPDIR=str(ray_tmp))
    campaign = tmp_path / "c.yaml"
    campaign.write_text(
        "name: c\ndefaults: [output.size=64, output.pose_preview=false]\nshots:\n"
        f"  - {{id: please, motion: {MEDIA / 'gesture_asl_please.mkv'}, character: {MEDIA / 'childdrawing_char1.png'}, "
        f"skeleton: {MEDIA / 'childdrawing_char1_skeleton.yaml'}, mask: {MEDIA / 'childdrawing_char1_mask.png'}}}\n"
    )
    try:
        ray = Path(sys.executable).with_name("ray")
        subprocess.run(
            [ray, "start", "--head", "--port=0", "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"],
            check=True, capture_output=True, env=env, timeout=300,
        )
        _kill_processes_of(ray_tmp)
        assert (ray_tmp / "ray" / "ray_current_cluster").read_text().strip()  # still names the dead cluster
        done = subprocess.run(
            [sys.executable, "-m", "farm.cli", "submit", str(campaign), "-o", str(tmp_path / "out")],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
        )
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "out" / "c" / "shots" / "please" / "video.mp4").is_file()
    finally:
        _kill_processes_of(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
