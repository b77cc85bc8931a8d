"""A campaign on Ray: every window of every shot is a work item for the whole cluster.

Per shot: one plan task (inputs, character, preflight, retarget, window plan; its pose extraction
fans out over frame-range chunks for long videos), then its windows, each rendered by one of a
pool of generator actors that keep their backend (the model) loaded and write the window's
checkpoint into the shot folder, then one task per encode segment (stitch + H.264), then one finish
task (join, artifacts, record). Shots stream: a shot's windows start as soon as its plan is ready
and its segments as soon as its last window is, so early shots complete while later ones are still
rendering. The driver holds only plans and window records; frames move through the shot folders.

Faults: a generator or worker process that dies mid-task is replaced and its task retried by Ray,
up to `runtime.max_retries` times; a window that still fails marks its shot failed and the rest of
the campaign goes on.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from farm.backends.base import Backend
from farm.config import FarmConfig
from farm.errors import FarmError
from farm.pose.extract import PoseOptions, PoseSequence, concat_poses, extract_poses
from farm.qa.preflight import count_people
from farm.render import (
    Reporter,
    Shot,
    ShotPlan,
    ShotResult,
    backend_spec,
    encode_segment,
    fail_shot,
    finish_shot,
    make_backend,
    plan_shot,
    record_failure,
    render_window,
)

# Pose extraction of a video longer than this is split into chunks of this many frames.
POSE_CHUNK_FRAMES = 300

# Backends loaded in this worker process, by their config: a worker keeps its model between tasks.
_LOADED: dict[str, Backend] = {}


def _backend(cfg: FarmConfig) -> Backend:
    key = json.dumps(asdict(cfg.backend), sort_keys=True)
    if key not in _LOADED:
        _LOADED[key] = make_backend(cfg)
    return _LOADED[key]


@ray.remote
def _pose_chunk(video: Path, start: int, stop: int, options: PoseOptions) -> PoseSequence:
    return extract_poses(video, start=start, stop=stop, options=options)


def _sharded_extract(video: Path, frame_count: int, options: PoseOptions, reporter: Reporter) -> PoseSequence:
    """Pose of a long video as parallel frame-range chunks (each warms its tracker up on a few
    frames before its range, so the joins do not jump)."""
    if frame_count <= POSE_CHUNK_FRAMES:
        return extract_poses(video, options=options)
    # About POSE_CHUNK_FRAMES per chunk, and a whole number of chunks per CPU, so no CPU idles in
    # the last round.
    cpus = _node_cpus()
    count = max(1, round(frame_count / POSE_CHUNK_FRAMES / cpus)) * cpus
    bounds = np.linspace(0, frame_count, count + 1).round().astype(int).tolist()
    here = _here()
    chunks = [_pose_chunk.options(scheduling_strategy=here).remote(video, a, b, options) for a, b in zip(bounds, bounds[1:])]
    return concat_poses(ray.get(chunks))


def _node_cpus() -> int:
    """CPUs of this node (the chunks are pinned here, next to the video file)."""
    node = ray.get_runtime_context().get_node_id()
    found = next((n["Resources"].get("CPU", 1) for n in ray.nodes() if n["NodeID"] == node and n["Alive"]), 1)
    return max(1, int(found))


def _here() -> NodeAffinitySchedulingStrategy:
    """Run on this node: the video is a file here (fetched from the store by the plan task)."""
    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


@ray.remote
def _count_people(video: Path) -> tuple[int, str]:
    return count_people(video)


def _people_alongside(video: Path):
    ref = _count_people.options(scheduling_strategy=_here()).remote(video)
    return lambda: ray.get(ref)


@ray.remote
def _plan(shot: Shot, cfg: FarmConfig, out_root: Path | str, force: bool) -> ShotPlan | ShotResult:
    return plan_shot(
        shot, cfg, out_root, backend_spec(cfg), force=force, extract=_sharded_extract, people=_people_alongside
    )


@ray.remote
class _Generator:
    """A window worker: one backend per config, loaded once and kept between windows."""

    def render(self, plan: ShotPlan, index: int) -> dict:
        backend = _backend(plan.cfg)
        backend.prepare(plan.character, plan.canvas)
        return render_window(backend, plan, plan.windows[index], worker=f"{socket.gethostname()}:{os.getpid()}")


class _GeneratorPool:
    """The generator actors of a campaign, by the GPUs one of them needs, and the windows waiting
    for one. A GPU backend gets one actor per GPU slot of the cluster, holding its GPUs; the CPU
    puppet gets one actor per cluster CPU, holding none (it would otherwise starve the pose and
    encode tasks of CPUs while idle) and spread over the nodes. Actors start when their first window
    is queued and live until the campaign ends."""

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries
        self.idle: dict[float, list] = {}
        self.queue: dict[float, list[tuple]] = {}
        self.busy: dict[ray.ObjectRef, tuple[float, object]] = {}

    def submit(self, gpus: float, name: str, plan_ref, index: int, tag: tuple) -> None:
        if gpus not in self.idle:
            self.idle[gpus] = self._start(gpus)
            self.queue[gpus] = []
        self.queue[gpus].append((name, plan_ref, index, tag))

    def dispatch(self, waiting: dict, wanted) -> None:
        """Hand queued windows to idle actors; `wanted(tag)` is False for a window of a failed shot."""
        for gpus, queue in self.queue.items():
            while queue and self.idle[gpus]:
                name, plan_ref, index, tag = queue.pop(0)
                if not wanted(tag):
                    continue
                actor = self.idle[gpus].pop()
                ref = actor.render.options(name=name).remote(plan_ref, index)
                self.busy[ref] = (gpus, actor)
                waiting[ref] = tag

    def close(self) -> None:
        """End the actors (their processes and the models they hold)."""
        for actors in self.idle.values():
            for actor in actors:
                ray.kill(actor)
        for _, actor in self.busy.values():
            ray.kill(actor)
        self.idle, self.busy = {}, {}

    def release(self, ref: ray.ObjectRef, *, broken: bool = False) -> None:
        """The actor that ran `ref` is free again; one whose process died (broken) is replaced by a
        new actor, so no window is sent to it while Ray is still restarting it."""
        if ref in self.busy:
            gpus, actor = self.busy.pop(ref)
            if broken:
                ray.kill(actor)
                actor = self._start(gpus, count=1)[0]
            self.idle[gpus].append(actor)

    def _start(self, gpus: float, count: int | None = None) -> list:
        resources = ray.cluster_resources()
        if gpus:
            slots = int(resources.get("GPU", 0) // gpus)
            if slots == 0:
                raise FarmError("backend", f"needs {gpus:g} GPU per worker and the Ray cluster has {resources.get('GPU', 0):g}",
                                "run on a cluster with GPUs, set backend.device=cpu, or pick the CPU puppet (backend=puppet)")
            options = {"num_cpus": 1, "num_gpus": gpus}
            count = count or slots
        else:
            options = {"num_cpus": 0, "scheduling_strategy": "SPREAD"}
            count = count or max(1, int(resources.get("CPU", 1)))
        # Unlimited restarts (a pool actor serves many windows); each window is retried max_retries times.
        return [_Generator.options(**options, max_restarts=-1, max_task_retries=self.max_retries).remote()
                for _ in range(count)]


@ray.remote
def _segment(plan: ShotPlan, index: int, logs: list[dict]) -> dict:
    return encode_segment(plan, plan.segments[index], logs, worker=f"{socket.gethostname()}:{os.getpid()}")


@ray.remote
def _finish(plan: ShotPlan, logs: list[dict], segments: list[dict]) -> ShotResult:
    return finish_shot(plan, logs, segments)


@dataclass
class _Shot:
    """Driver-side state of one shot."""

    plan: ShotPlan | None = None
    plan_ref: ray.ObjectRef | None = None
    logs: dict[int, dict] = field(default_factory=dict)
    pending: int = 0
    segments: dict[int, dict] = field(default_factory=dict)
    held: dict[int, int] = field(default_factory=dict)  # chained: window -> the window waiting for it


class Progress:
    """What the driver reports while it runs (the CLI draws it)."""

    def shots(self, total: int) -> None: ...
    def frames(self, added_total: int) -> None: ...
    def frames_done(self, n: int) -> None: ...
    def shot_done(self, result: ShotResult) -> None: ...


def run_campaign(
    items: list[tuple[Shot, FarmConfig | FarmError]],
    out_root: Path | str,
    *,
    force: bool = False,
    max_retries: int = 3,
    progress: Progress | None = None,
) -> list[ShotResult]:
    """Render every shot; results come back in the order of `items`. A shot whose config could
    not be loaded (a FarmError in place of its config) is recorded as failed without running."""
    progress = progress or Progress()
    progress.shots(len(items))
    results: list[ShotResult | None] = [None] * len(items)
    state = {i: _Shot() for i in range(len(items))}
    waiting: dict[ray.ObjectRef, tuple[str, int, int]] = {}  # ref -> (kind, shot, window)

    for i, (shot, cfg) in enumerate(items):
        if isinstance(cfg, FarmError):
            results[i] = record_failure(shot, None, out_root, cfg)
            progress.shot_done(results[i])
            continue
        options = _options(max_retries, f"plan {shot.shot_id or Path(str(shot.motion)).name}")
        waiting[_plan.options(**options).remote(shot, cfg, out_root, force)] = ("plan", i, -1)

    generators = _GeneratorPool(max_retries)
    owner: dict[str, int] = {}  # shot folder -> the item rendering it (identical shots render once)
    followers: dict[int, list[int]] = {}

    def finalize(i: int, result: ShotResult) -> None:
        if results[i] is None:
            results[i] = result
            state.pop(i, None)  # let go of the plan (character image, poses) as soon as the shot is done
            progress.shot_done(result)
        for f in followers.pop(i, []):
            same = ShotResult(result.shot_id, "failed" if result.status == "failed" else "reused",
                              result.folder, result.manifest, result.error, result.uri)
            finalize(f, same)

    try:
        while True:
            # Windows go to generators as they free up (a `continue` below must not skip this).
            generators.dispatch(waiting, lambda tag: tag[1] in state)
            if not waiting:
                break
            ready, _ = ray.wait(list(waiting), num_returns=1)
            ref = ready[0]
            kind, i, w = waiting.pop(ref)
            try:
                value = ray.get(ref)
            except (ray.exceptions.RayError, FarmError) as exc:
                value = exc
            generators.release(ref, broken=isinstance(value, ray.exceptions.RayActorError))
            shot, cfg = items[i]
            entry = state.get(i)
            if entry is None:  # the shot already failed on another window; drop what is left of it
                continue
            try:
                if kind == "plan":
                    if isinstance(value, BaseException):  # the plan task itself could not run (its worker kept dying)
                        reason = FarmError(f"shot {shot.shot_id or shot.motion}", f"could not be planned: {_cause(value)}", "run again")
                        finalize(i, record_failure(shot, cfg, out_root, reason))
                    elif isinstance(value, ShotResult):
                        finalize(i, value)
                    elif value.uri in owner:  # the same inputs and config as another shot of this run
                        followers.setdefault(owner[value.uri], []).append(i)
                        if results[owner[value.uri]] is not None:  # which may be done already
                            finalize(owner[value.uri], results[owner[value.uri]])
                    else:
                        owner[value.uri] = i
                        _start_windows(i, value, ref, entry, waiting, progress, cfg, max_retries, generators)
                elif kind == "window":
                    plan = entry.plan
                    if isinstance(value, BaseException):  # the first failed window fails the shot
                        reason = _window_failure(value, plan.windows[w], max_retries)
                        finalize(i, fail_shot(shot, plan.folder, plan.record, plan.timings, reason, uri=plan.uri, cfg=cfg))
                        continue
                    entry.logs[w] = value
                    entry.pending -= 1
                    progress.frames_done(plan.windows[w].length)
                    if w in entry.held:  # chained: the next window of the chain can go now
                        after = entry.held.pop(w)
                        gpus = backend_spec(cfg).num_gpus
                        generators.submit(gpus, f"window {plan.shot_id} {after}", entry.plan_ref, after, ("window", i, after))
                    if entry.pending == 0:
                        _start_segments(i, entry, waiting, cfg, max_retries)
                elif kind == "segment":
                    plan = entry.plan
                    if isinstance(value, BaseException):
                        finalize(i, fail_shot(shot, plan.folder, plan.record, plan.timings, _cause(value), uri=plan.uri, cfg=cfg))
                        continue
                    entry.segments[w] = value
                    if len(entry.segments) == len(plan.segments):
                        logs = [entry.logs[k] for k in range(len(plan.windows))]
                        segments = [entry.segments[k] for k in range(len(plan.segments))]
                        options = _options(max_retries, f"finish {plan.shot_id}")
                        waiting[_finish.options(**options).remote(entry.plan_ref, logs, segments)] = ("finish", i, -1)
                else:  # finish
                    plan = entry.plan
                    finalize(i, value if isinstance(value, ShotResult) else fail_shot(
                        shot, plan.folder, plan.record, plan.timings, _cause(value), uri=plan.uri, cfg=cfg
                    ))
            except FarmError as exc:  # the store failed while recording this shot: the others go on
                finalize(i, ShotResult(shot.shot_id or "?", "failed", Path("."), {}, str(exc), ""))
    finally:
        generators.close()  # the pool lives as long as its campaign

    return [r for r in results if r is not None]


def _start_windows(i, plan: ShotPlan, plan_ref, entry: _Shot, waiting, progress: Progress, cfg: FarmConfig, max_retries: int,
                   generators: _GeneratorPool) -> None:
    entry.plan, entry.plan_ref = plan, plan_ref
    progress.frames(sum(w.length for w in plan.windows))  # frames generated, overlaps included
    gpus = backend_spec(cfg).num_gpus
    for w, window in enumerate(plan.windows):
        if plan.has_window(window):  # a checkpoint from an interrupted run
            entry.logs[w] = {**window.to_dict(), "reused": True}
            progress.frames_done(window.length)
            continue
        entry.pending += 1
        before = plan.previous_window(window)
        if before is not None and before.index not in entry.logs:  # chained: it waits for the window it continues
            entry.held[before.index] = w
        else:
            generators.submit(gpus, f"window {plan.shot_id} {w}", plan_ref, w, ("window", i, w))
    if entry.pending == 0:
        _start_segments(i, entry, waiting, cfg, max_retries)


def _start_segments(i, entry: _Shot, waiting, cfg: FarmConfig, max_retries: int) -> None:
    """Every window is in: stitch and encode the shot's segments in parallel (then _finish joins them)."""
    plan = entry.plan
    logs = [entry.logs[k] for k in range(len(plan.windows))]
    for segment in plan.segments:
        options = _options(max_retries, f"segment {plan.shot_id} {segment.index}")
        waiting[_segment.options(**options).remote(entry.plan_ref, segment.index, logs[: segment.stop])] = ("segment", i, segment.index)


def _options(max_retries: int, name: str) -> dict:
    """Resources of a CPU task (plan, segment, finish): one CPU, no GPU. Retries cover dead workers
    only (bad input does not get better). The name ("segment <shot> <index>") is what
    `ray list tasks` and the worker's process title show."""
    return {"num_cpus": 1, "num_gpus": 0, "max_retries": max_retries, "retry_exceptions": False, "name": name}


def _window_failure(exc: BaseException, window, max_retries: int) -> BaseException:
    """A window's error as the user should read it: its own FarmError, or what happened to its worker."""
    cause = _cause(exc)
    if isinstance(cause, FarmError) or not isinstance(exc, ray.exceptions.RayError) or isinstance(exc, ray.exceptions.RayTaskError):
        return cause
    tries = max_retries + 1
    return FarmError(
        f"window {window.index} (frames {window.start}-{window.end - 1})",
        f"its worker process died {tries} time{'s' if tries > 1 else ''} ({type(exc).__name__})",
        "run the campaign again (finished windows are kept); if it keeps dying, check memory and the Ray worker logs, "
        "or raise runtime.max_retries",
    )


def _cause(exc: BaseException) -> BaseException:
    """The user-facing error inside a Ray error, when there is one."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
