"""Operating the farm (README "Operating the farm"): alerts at the end of a campaign run, what each
shot and campaign cost, `farm status --watch`, and kubectl for the k8s tests on any machine."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from farm import cli
from farm.config import load_config
from farm.errors import FarmError
from farm.manifest import window_cost
from farm.notify import Message, send
from farm.records import CampaignRecord, progress_of
from farm.shot.outcome import ShotResult
from tests.test_render import REPO
from tests.test_runtime import MEDIA, _campaign, _drawing


class _Receiver:
    """An HTTP server on 127.0.0.1 that keeps the body of every POST it is sent (apprise's json://)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    found = _Receiver()
    yield found
    found.close()


def test_notify_and_cost_are_operator_settings_a_campaign_cannot_set():
    for override in ("notify.urls=['json://evil.example/x']", "cost.gpu_hour=0"):
        with pytest.raises(FarmError, match="operator setting"):
            load_config([], campaign=[override])
    cfg = load_config(["notify.urls=['json://127.0.0.1:9/x']", "cost.gpu_hour=2.5"])
    assert cfg.notify.urls == ["json://127.0.0.1:9/x"] and cfg.cost.gpu_hour == 2.5 and cfg.cost.cpu_hour is None
    with pytest.raises(FarmError, match="cost.cpu_hour"):
        load_config(["cost.cpu_hour=-1"])


def test_window_cost_is_generator_seconds_times_held_resources_at_hourly_prices():
    windows = [{"seconds": 90.0, "gpus": 1, "cpus": 1}, {"seconds": 30.0, "gpus": 1, "cpus": 1}, {"reused": True}]
    cost = window_cost(windows, gpu_hour=3.0, cpu_hour=0.36)
    # 120 GPU-s at 3/h = 0.1, 120 CPU-s at 0.36/h = 0.012; the reused window cost nothing.
    assert cost == {"gpu_seconds": 120.0, "cpu_seconds": 120.0, "gpu_hour": 3.0, "cpu_hour": 0.36, "money": 0.112}
    assert window_cost(windows, None, None)["money"] is None


def test_a_campaign_records_its_cost_and_sends_one_message_with_counts_and_report(tmp_path, receiver, capsys, ray_cluster):
    # One shot, its QA made strict by the campaign so it is flagged; the operator's alerts and price.
    campaign = _campaign(tmp_path, _drawing("please", "gesture_asl_please.mkv"), name="ops")
    text = Path(campaign).read_text()
    Path(campaign).write_text(text.replace("output.pose_preview=false", "output.pose_preview=false, qa.max_jitter=0.0"))
    out = tmp_path / "out"
    assert cli.run(["submit", campaign, "-o", str(out), f"notify.urls=['{receiver.url}']", "cost.cpu_hour=3.6"]) == 0
    summary = capsys.readouterr().out
    # The manifest: every rendered window says what it held and for how long; the shot's cost is their sum.
    manifest = json.loads((out / "ops" / "shots" / "please" / "manifest.json").read_text())
    windows = manifest["windows"]
    assert len(windows) == 2 and all(w["gpus"] == 0 and w["cpus"] == 1 and w["seconds"] > 0 for w in windows)
    cpu_seconds = round(sum(w["seconds"] for w in windows), 3)
    assert manifest["cost"] == {"gpu_seconds": 0.0, "cpu_seconds": cpu_seconds, "gpu_hour": None, "cpu_hour": 3.6,
                                "money": round(cpu_seconds / 1000, 6)}
    assert "notify" not in manifest["config"]  # apprise URLs hold tokens
    # campaign.json, campaign.parquet, the report and the summary show the same numbers.
    doc = json.loads((out / "ops" / "campaign.json").read_text())
    assert doc["counts"]["cpu_seconds"] == cpu_seconds and doc["counts"]["money"] == manifest["cost"]["money"]
    row = pq.read_table(out / "ops" / "campaign.parquet").to_pylist()[0]
    assert (row["gpu_seconds"], row["cpu_seconds"], row["money"]) == (0.0, cpu_seconds, manifest["cost"]["money"])
    page = (out / "ops" / "report.html").read_text()
    assert f"cost: 0.0 GPU-seconds, {cpu_seconds} CPU-seconds, money {manifest['cost']['money']:.4f}" in page
    shot_page = (out / "ops" / "shots" / "please" / "report.html").read_text()
    assert f'id="cpu-seconds">{cpu_seconds}<' in shot_page and f'id="money">{manifest["cost"]["money"]:.4f}<' in shot_page
    assert f"{cpu_seconds:g} CPU-seconds" in summary
    # One message, after the record was final: a warning (the flagged shot), the counts, the report.
    assert len(receiver.received) == 1
    message = receiver.received[0]
    assert message["type"] == "warning"
    assert message["title"] == "motion-farm: campaign ops finished; 1 shot need a re-render"
    assert "1/1 shots done: 1 rendered, 0 reused, 0 failed, 1 need a re-render" in message["message"]
    assert "re-render: please" in message["message"] and f"report: {out / 'ops' / 'report.html'}" in message["message"]
    # `farm status` shows the shot's and the campaign's cost.
    assert cli.run(["status", str(out / "ops")]) == 0
    status = capsys.readouterr().out
    assert f"cost: 0 GPU-seconds, {cpu_seconds:g} CPU-seconds, money {manifest['cost']['money']:.4g}" in status


def test_farm_cancel_stops_a_running_campaign_cleanly_and_a_rerun_finishes_it(tmp_path, receiver, capsys, ray_cluster):
    # Six one-window shots on the session's two fake GPUs (three rounds of ~6 s windows): cancelled once
    # the first shot is done, so at least the last round cannot have started.
    shots = "".join(_drawing(f"take{i}", "gesture_asl_please.mkv") for i in range(6))
    campaign = Path(_campaign(tmp_path, shots, name="night"))
    out, folder = tmp_path / "out", tmp_path / "out" / "night"
    operator = ["backend=simulated", "backend.seconds_per_frame=0.08", "backend.load_seconds=0", f"notify.urls=['{receiver.url}']"]
    code: list[int] = []
    runner = threading.Thread(target=lambda: code.append(cli.run(["submit", str(campaign), "-o", str(out), *operator])))
    runner.start()
    deadline = time.monotonic() + 120
    while runner.is_alive() and time.monotonic() < deadline:
        doc = json.loads((folder / "campaign.json").read_text()) if (folder / "campaign.json").exists() else None
        if doc and doc["counts"]["shots_done"] >= 1:
            break
        time.sleep(0.2)
    asked = time.monotonic()
    assert cli.run(["cancel", str(folder), "--wait", "60"]) == 0
    runner.join(60)
    assert code == [0] and time.monotonic() - asked < 15  # stopped within seconds, not after the other windows
    said = capsys.readouterr().out
    doc = json.loads((folder / "campaign.json").read_text())
    assert doc["status"] == "cancelled" and "campaign night cancelled" in said, said
    done = {r["shot_id"] for r in doc["shots"]}
    assert 1 <= len(done) <= 4 and {r["status"] for r in doc["shots"]} == {"succeeded"}
    assert {p["state"] for p in doc["pending"]} <= {"cancelled", "queued"} and len(doc["pending"]) == 6 - len(done)
    for shot in {f"take{i}" for i in range(6)} - done:  # nothing half-written looks finished
        assert not (folder / "shots" / shot / "video.mp4").exists() and not (folder / "shots" / shot / "manifest.json").exists()
    assert not (folder / ".farm-cancel").exists()
    assert receiver.received[-1]["title"] == f"motion-farm: campaign night cancelled after {len(done)} of 6 shots"
    # Cancelling what is not running says so; running the campaign again renders only what is missing.
    assert cli.run(["cancel", str(folder)]) == 2
    assert "is not running (campaign.json says cancelled)" in capsys.readouterr().err
    assert cli.run(["submit", str(campaign), "-o", str(out), *operator]) == 0
    again = json.loads((folder / "campaign.json").read_text())
    assert again["status"] == "finished" and again["counts"]["shots_reused"] == len(done)
    assert again["counts"]["shots_succeeded"] == 6 - len(done)


def test_farm_requeue_renders_failed_flagged_and_named_shots_again_and_reuses_the_rest(tmp_path, capsys, ray_cluster):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    shots = (_drawing("good", "gesture_asl_please.mkv")
             + _drawing("strict", "gesture_asl_please.mkv").replace("}\n", ", overrides: [qa.max_jitter=0.0]}\n")
             + f"  - {{id: bad, motion: {broken}, character: {MEDIA / 'childdrawing_char1.png'}}}\n")
    campaign = Path(_campaign(tmp_path, shots, name="night"))
    out, folder = tmp_path / "out", tmp_path / "out" / "night"

    def run(*args: str) -> tuple[int, dict]:
        code = cli.run([*args])
        doc = json.loads((folder / "campaign.json").read_text())
        return code, {r["shot_id"]: r for r in doc["shots"]}

    code, rows = run("submit", str(campaign), "-o", str(out))
    assert code == 3 and rows["bad"]["status"] == "failed" and rows["strict"]["needs_rerender"] and not rows["good"]["needs_rerender"]
    assert cli.run(["requeue", str(folder)]) == 2 and "no shots chosen" in capsys.readouterr().err
    assert cli.run(["requeue", str(folder), "--shot", "nope"]) == 2 and "is not a shot of campaign night" in capsys.readouterr().err
    # Flagged: a new take with the next seed; the good shot is reused; the failed one is tried again (and fails again).
    code, rows = run("requeue", str(folder), "--flagged")
    seeds = json.loads((folder / "shots" / "strict" / "manifest.json").read_text())["seeds"]
    assert code == 3 and rows["strict"]["status"] == "succeeded" and seeds == [1], rows
    assert rows["good"]["status"] == "reused" and rows["bad"]["status"] == "failed"
    assert json.loads((folder / "retakes.json").read_text()) == {"strict": 1}
    # Named: rendered again though finished; the retake keeps its seed (reused), in a requeue and in a plain rerun.
    code, rows = run("requeue", str(folder), "--shot", "good")
    assert rows["good"]["status"] == "succeeded" and rows["strict"]["status"] == "reused"
    code, rows = run("submit", str(campaign), "-o", str(out))
    assert rows["good"]["status"] == "reused" and rows["strict"]["status"] == "reused"
    # The record names the campaign file; one that changed since is not requeued behind the user's back.
    campaign.write_text(campaign.read_text() + "\n# edited\n")
    assert cli.run(["requeue", str(folder), "--failed"]) == 2 and "changed since the run" in capsys.readouterr().err


def test_a_notification_that_cannot_be_sent_is_a_warning(receiver):
    message = Message("motion-farm: campaign c finished", "1/1 shots done", "success")
    assert send([receiver.url], message) == []
    assert receiver.received[0]["title"] == message.title and receiver.received[0]["type"] == "success"
    port = receiver.server.server_address[1]
    receiver.close()  # nothing listens there any more
    warnings = send([f"json://127.0.0.1:{port}/hook", "nonsense://token@host/secret"], message)
    assert len(warnings) == 2 and "nonsense://host/…" in warnings[0] and "could not be sent" in warnings[1]
    assert not any("token" in w or "secret" in w for w in warnings)


def _result(shot_id: str, status: str, *, flagged: bool = False, windows: int = 2) -> ShotResult:
    """A finished shot as the campaign record takes it (its manifest's fields that the record reads)."""
    manifest = {"metrics": {"frames": 10, "windows_rendered": windows, "windows_reused": 0},
                "qa": {"needs_rerender": flagged, "reasons": ["jitter"] if flagged else []},
                "cost": {"gpu_seconds": 0.0, "cpu_seconds": 1.5, "money": None}}
    return ShotResult(shot_id, status, Path("."), manifest, "boom" if status == "failed" else None, f"s3://x/{shot_id}")


def test_status_watch_follows_a_campaign_json_rewritten_on_s3_until_it_finishes(tmp_path, s3_bucket, s3_endpoint, capsys):
    store, bucket = s3_bucket
    uri = f"{bucket}/renders/live"
    record = CampaignRecord(tmp_path / "live", "live", 3, store, uri, every=0.0)
    record.queue(["a", "b", "c"])
    record.write()
    seen = []

    def run_campaign():
        time.sleep(0.3)
        for position, shot in enumerate("abc"):
            record.state(position, "rendering", 1, 2)
            seen.append(progress_of(json.loads(store.get_bytes(f"{uri}/campaign.json")), time.time()))
            time.sleep(0.2)
            record.add(_result(shot, "failed" if shot == "c" else "succeeded", flagged=shot == "b"), position=position)
            time.sleep(0.2)
        record.write(finished=True)

    writer = threading.Thread(target=run_campaign)
    writer.start()
    started = time.monotonic()
    code = cli.run(["status", uri, "--watch", "--interval", "0.05", f"storage.endpoint_url={s3_endpoint}"])
    writer.join()
    assert code == 0 and time.monotonic() - started > 1.0  # it waited for the run to end
    out = capsys.readouterr().out
    assert "campaign live (finished)" in out
    assert "3/3 shots done: 2 rendered, 0 reused, 1 failed, 1 need a re-render" in out
    assert "windows 6/6" in out and "cost: 0 GPU-seconds, 4.5 CPU-seconds" in out
    # While it ran: windows done of all (the unplanned shots at the planned ones' mean), and an ETA.
    assert [(s["windows_done"], s["windows_total"]) for s in seen] == [(1, 6), (3, 6), (5, 6)]
    assert all(s["eta_seconds"] is not None and s["eta_seconds"] >= 0 for s in seen)


def test_status_names_the_nodes_a_campaign_stopped_giving_windows_to(tmp_path, capsys):
    record = CampaignRecord(tmp_path / "night", "night", 1)
    record.add(_result("a", "succeeded"), position=0)
    record.bad_nodes.append({"node": "9f3c0a1b2c3d" + "0" * 44, "failures": 3, "at": time.time(),
                             "last_failure": "no result within runtime.window_timeout_s (600 s)"})
    record.write(finished=True)
    assert json.loads((tmp_path / "night" / "campaign.json").read_text())["bad_nodes"][0]["failures"] == 3
    assert cli.run(["status", str(tmp_path / "night")]) == 0
    out = capsys.readouterr().out
    assert "bad node 9f3c0a1b2c3d: no more windows after 3 failed in a row (last: no result within " \
           "runtime.window_timeout_s (600 s))" in out


@pytest.mark.slow
def test_make_installs_kubectl_with_kustomize_v5_into_the_venv_when_the_machine_has_none(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # A machine without kubectl: the one the Makefile asks first is not there.
    subprocess.run(["make", "-C", str(REPO), "kubectl", f"VENV={venv}", "KUBECTL=/nonexistent/kubectl"], check=True,
                   capture_output=True)
    version = subprocess.run([str(venv / "bin" / "kubectl"), "version", "--client"], check=True, capture_output=True, text=True)
    assert "Kustomize Version: v5" in version.stdout
    # The k8s tests look in the venv's bin first, the way `make test` runs them (an unactivated venv).
    from tests.test_deploy import kubectl_path

    assert kubectl_path(venv / "bin") == str(venv / "bin" / "kubectl")
    assert kubectl_path(tmp_path) == shutil.which("kubectl")  # a venv without one: the machine's
    assert os.access(kubectl_path(venv / "bin"), os.X_OK)
