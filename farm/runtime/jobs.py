"""Campaigns as Ray Jobs (`farm job`): the driver runs on the Ray head, so the process that submits
it (a Kubernetes CronJob's pod, a laptop) may go away and the campaign goes on. Ray's docs say a
Ray Client that loses its connection for more than ~30 s has its workload ended; a job does not
depend on its submitter at all.

The submitter checks the campaign files first (a typo is exit 2 here, before the cluster is
asked), uploads just those files as the job's working directory, starts `farm submit` of them under
a submission id that names the campaign and the day (`farm-<name>-<YYYYMMDD>`), and follows the
job's log until it ends; its exit status is the job's (`farm submit`'s). Run again with the same
id (a retried CronJob pod, the same night), it attaches to the job if it is still running, and
says so and exits 0 if it has succeeded; after a failed or stopped job it submits the next one
(`<id>-2`, `<id>-3`, …), which renders only what is missing. The driver records the submission id
in campaign.json (`ray_job`), from the job's environment (FARM_RAY_JOB).
"""
from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from farm.errors import FarmError

JOB_ENV = "FARM_RAY_JOB"  # the submission id, in the environment of the job's driver
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def default_id(campaigns: Path, day: float | None = None) -> str:
    """farm-<campaign file or folder name>-<UTC date>: one job a campaign a night."""
    name = re.sub(r"[^a-z0-9]+", "-", campaigns.stem.lower()).strip("-") or "campaign"
    return f"farm-{name}-{time.strftime('%Y%m%d', time.gmtime(day))}"


def run_job(campaigns: Path, files: list[Path], out: str, address: str, *, job_id: str, overrides: list[str],
            say: Callable[[str], None], log: Callable[[str], None], poll: float = 5.0) -> int:
    """Submit `farm submit` of `files` (the checked campaign files of `campaigns`, a file or a
    folder) to the Ray job server at `address` under `job_id` (or attach to it), follow it, and
    return its exit status. say: one line for the user; log: the job's own output as it comes."""
    client = _client(address)
    submission, status = _existing(client, job_id)
    if status == "SUCCEEDED":
        say(f"job {submission} has already succeeded: nothing to do (campaign.json in {out} has the result)")
        return 0
    if status in ("PENDING", "RUNNING"):
        say(f"job {submission} is {status.lower()}: following it (it goes on if this process ends)")
    else:
        with tempfile.TemporaryDirectory(prefix="farm-job-") as folder:
            for path in files:  # just the campaign files, as regular files (a ConfigMap mount holds symlinks)
                shutil.copyfile(path, Path(folder) / path.name)
            target = "." if campaigns.is_dir() else campaigns.name
            entrypoint = shlex.join(["farm", "submit", target, "-o", out, *overrides])
            _submit(client, address, say, entrypoint=entrypoint, submission_id=submission,
                    runtime_env={"working_dir": folder, "env_vars": {JOB_ENV: submission}},
                    metadata={"farm": "campaign", "campaigns": str(campaigns)})
        say(f"submitted job {submission}: farm submit on the Ray head; it goes on if this process ends "
            f"(ray job logs {submission} --address {address} follows it)")
    status = _follow(client, submission, log, say, poll)
    info = client.get_job_info(submission)
    if status == "SUCCEEDED":
        say(f"job {submission} succeeded")
        return 0
    code = info.driver_exit_code
    say(f"job {submission} {status.lower()}" + (f" (farm submit exit status {code})" if code is not None else "")
        + (f": {info.message}" if info.message and status != "FAILED" else ""))
    return code if status == "FAILED" and code not in (None, 0) else 1


AGENT_WAIT_S = 120.0  # a head that has just started (or restarted) has no job agent for some seconds


def _submit(client, address: str, say: Callable[[str], None], **job) -> None:
    """submit_job, waiting out a head whose job agent is not up yet: the server answers "No available
    agent to submit job, please try again later" for a while after `ray start` (a CronJob that
    fires as the cluster comes up, a head pod just restarted)."""
    deadline = time.monotonic() + AGENT_WAIT_S
    waiting = False
    while True:
        try:
            client.submit_job(**job)
            return
        except Exception as exc:  # noqa: BLE001 - the SDK raises RuntimeError/ConnectionError with the server's text
            if "try again later" in str(exc) and time.monotonic() < deadline:
                if not waiting:
                    say(f"the Ray head at {address} has no job agent yet; waiting up to {AGENT_WAIT_S:.0f} s for it")
                    waiting = True
                time.sleep(2.0)
                continue
            if "try again later" in str(exc):
                raise FarmError(f"Ray job server {address}", f"has had no job agent for {AGENT_WAIT_S:.0f} s",
                                "look at the head's dashboard_agent.log: its port (52365, ray start "
                                "--dashboard-agent-listen-port) may be taken by another Ray on that machine") from None
            raise FarmError(f"Ray job server {address}", f"did not take the job: {_last_line(exc)}",
                            "check --address (the head's dashboard port, 8265) and that the head runs ray[default]") from None


def _last_line(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError for a malformed address
        raise FarmError(f"--address {address}", f"no Ray job server answers there ({type(exc).__name__})",
                        "give the head's dashboard URL, e.g. http://farm-head-svc:8265 (or FARM_RAY_JOBS)") from None


def _existing(client, job_id: str) -> tuple[str, str | None]:
    """The submission to follow or make: `job_id` while it is new, running or succeeded; after a
    failed or stopped one, the next free `<job_id>-N`. Returns (id, its status or None if new)."""
    for n in range(1, 1000):
        submission = job_id if n == 1 else f"{job_id}-{n}"
        try:
            status = str(client.get_job_status(submission).value)
        except RuntimeError:  # no such job
            return submission, None
        if status not in ("FAILED", "STOPPED"):
            return submission, status
    raise FarmError(f"job {job_id}", "has failed 999 times", "look at `ray job logs` of the last one, fix the cause, use another --id")


def _follow(client, submission: str, log: Callable[[str], None], say: Callable[[str], None], poll: float) -> str:
    """The job's log as it comes, until it ends; a lost connection to the job server is waited out
    (the job does not depend on it). Returns the job's final status."""
    quiet_since = None
    while True:
        try:
            asyncio.run(_tail(client, submission, log))
            status = str(client.get_job_status(submission).value)
            quiet_since = None
        except Exception as exc:  # noqa: BLE001 - the server restarting, the network: keep waiting
            if quiet_since is None:
                quiet_since = time.monotonic()
                say(f"lost the Ray job server ({type(exc).__name__}); job {submission} goes on there, waiting for the server")
            time.sleep(poll)
            continue
        if status in _TERMINAL:
            return status
        time.sleep(poll)


async def _tail(client, submission: str, log: Callable[[str], None]) -> None:
    async for lines in client.tail_job_logs(submission):
        log(lines)

