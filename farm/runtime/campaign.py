"""A campaign on Ray: every window of every shot is a work item for the whole cluster.

Per shot: one plan task (inputs, character, preflight, retarget, window plan; its pose extraction
fans out over frame-range chunks for long videos), then its windows, each rendered by one of a
pool of generator actors that keep their backend (the model) loaded and write the window's
checkpoint into the shot folder, then one task per encode segment (stitch + H.264), then one finish
task (join, artifacts, record). Shots stream: a shot's windows start as soon as its plan is ready
and its segments as soon as its last window is, so early shots complete while later ones are still
rendering. Frames move through the shot folders.

Order: shots start by priority (higher first), then longest motion first, so that the last
generators do not idle while one long shot finishes alone; equal shots keep the campaign's order.

Admission: shots are planned only as fast as the generators can take their windows: at most
`runtime.max_shots_in_flight` shots are between their plan and their result (by default twice the
cluster's generator slots, a few more than keep every generator busy), the rest wait as the
(shot, config) pairs they came as. The driver reads only each plan's head (windows, segments,
record); the character, poses and targets stay in the object store for the workers, and are let go
when the shot ends.

Faults: a worker process or a whole node that dies mid-task takes its tasks with it. Plan,
segment and finish tasks are retried by Ray (a lost plan object is made again from its task);
a window whose generator died is queued again by its shot for the generators left, and the pool
replaces the generator only where the cluster still has room (_GeneratorPool). Each up to
`runtime.max_retries` times; a window that still fails marks its shot failed and the rest of the
campaign goes on. A window with no result within `runtime.window_timeout_s` (a hung GPU) is a failed
try too: its generator is killed and replaced. A node where `runtime.bad_node_failures` windows in a
row failed gets no more windows of the campaign (the pool's bad-node list, in campaign.json).
"""
from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from farm.backends.base import Backend, BackendSpec
from farm.config import FarmConfig
from farm.errors import FarmError
from farm.pose.extract import PoseOptions, PoseSequence, chunk_bounds, concat_poses, extract_poses
from farm.qa.preflight import OthersSeen, others_seen
from farm.qa.window import Takes, checking
from farm.records import Progress
from farm.shot.finish import finish_shot, make_preview
from farm.shot.inputs import fetch_input, probe_motion
from farm.shot.outcome import ShotResult, fail_shot, record_failure
from farm.shot.plan import plan_shot
from farm.shot.planned import PlanHead, ShotPlan
from farm.shot.segment import encode_segment
from farm.shot.tools import backend_spec, make_backend, shot_pose_options, storage_for
from farm.shot.types import Reporter, Shot
from farm.shot.window import render_window
from farm.windows import new_frames

# Backends loaded in this worker process, by their config: a worker keeps its model between tasks.
_LOADED: dict[str, Backend] = {}


def _backend(cfg: FarmConfig) -> Backend:
    key = json.dumps([asdict(cfg.backend), cfg.runtime.backend_wrapper], sort_keys=True)
    if key not in _LOADED:
        _LOADED[key] = make_backend(cfg)
    return _LOADED[key]


@ray.remote
def _pose_chunk(video: Path, start: int, stop: int, options: PoseOptions) -> PoseSequence:
    return extract_poses(video, start=start, stop=stop, options=options)


def _sharded_extract(video: Path, frame_count: int, options: PoseOptions, reporter: Reporter, *,
                     chunk_frames: int) -> PoseSequence:
    """Pose of a video longer than `chunk_frames` as parallel frame-range chunks (each warms its
    tracker up on a few frames before its range, so the joins do not jump), on this node, which
    holds the video: if the node goes, the plan task that waits for them goes with it and is run
    again elsewhere. A chosen subject is followed from the first frame on, in one piece: a chunk
    could not tell which person it is."""
    if frame_count <= chunk_frames or options.subject is not None:
        return extract_poses(video, options=options)
    bounds = chunk_bounds(frame_count, chunk_frames, _node_cpus())
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
def _others_seen(video: Path) -> OthersSeen:
    return others_seen(video)


def _people_alongside(video: Path) -> Callable[[PoseSequence], tuple[int, str]]:
    ref = _others_seen.options(scheduling_strategy=_here()).remote(video)
    return lambda poses: ray.get(ref).count(poses)


@ray.remote(num_returns=2)
def _plan(shot: Shot, cfg: FarmConfig, out_root: Path | str, force: bool,
          library: str | None) -> tuple[PlanHead | ShotResult, ShotPlan | None]:
    """Two objects: what the driver reads (the plan's head, or the shot's result when it needs no
    render), and the whole plan, which only the workers fetch."""
    extract = partial(_sharded_extract, chunk_frames=cfg.runtime.pose_chunk_frames)
    plan = plan_shot(shot, cfg, out_root, backend_spec(cfg), force=force, extract=extract, people=_people_alongside,
                     library=library)
    return (plan.head(), plan) if isinstance(plan, ShotPlan) else (plan, None)


@ray.remote
class _Generator:
    """A window worker: one backend per config, loaded once and kept between windows."""

    def node(self) -> str:
        """The Ray node this actor runs on (also: it has started)."""
        return ray.get_runtime_context().get_node_id()

    def render(self, plan: ShotPlan, index: int, **take) -> dict:
        """Window `index` of the plan; `take`: which re-take (farm.qa.window.Takes), if one."""
        _title(f"window {plan.shot_id} {index}")
        backend = _backend(plan.cfg)
        backend.prepare(plan.character, plan.canvas)
        log = render_window(backend, plan, plan.windows[index], worker=f"{socket.gethostname()}:{os.getpid()}", **take)
        return {**log, "node": self.node()}


class _GeneratorPool:
    """The generator actors of a campaign, by the GPUs one of them needs, and the windows waiting
    for one. A GPU backend gets one actor per GPU slot of the cluster, holding its GPUs; the CPU
    puppet gets one actor per cluster CPU, holding none (it would otherwise starve the pose and
    encode tasks of CPUs while idle) and spread over the nodes. Actors start when their first window
    is queued and live until the campaign ends; a window goes only to an actor that has started.

    The pool follows the cluster: an actor whose process or node died is not restarted by Ray (a
    restart would wait forever for the GPU of a node that is gone, with the window it was given);
    the pool starts another only while the cluster has a slot for it, and more when nodes join, and
    the shot queues the window again (_ShotRun.window_done). An actor still starting when the
    cluster has lost its slot is let go.

    Hung workers and bad nodes: a window that has run longer than `timeout` seconds is a failed try
    (`expired`: its actor is killed and replaced). A node on which `bad_after` windows in a row
    failed (a dead or hung worker, an error that is not the input's) gets no more windows of this
    campaign: its actors go, new ones are placed elsewhere (Ray's node-id label), and `on_block`
    is told (Deadline's bad-worker list)."""

    def __init__(self, max_retries: int, timeout: float | None = None, bad_after: int = 0,
                 on_block: Callable[[str, dict], None] | None = None) -> None:
        self.max_retries, self.timeout, self.bad_after = max_retries, timeout, bad_after
        self.on_block = on_block or (lambda node, entry: None)
        self.idle: dict[tuple[float, float], list[tuple[object, str]]] = {}  # by (GPUs, CPUs) one actor holds: (actor, node)
        self.queue: dict[tuple[float, float], list[tuple]] = {}
        self.busy: dict[ray.ObjectRef, tuple[tuple[float, float], object, str, float]] = {}  # (held, actor, node, since)
        self.starting: dict[ray.ObjectRef, tuple[tuple[float, float], object]] = {}  # node ref -> actor
        self.live: dict[tuple[float, float], int] = {}  # actors started or starting, not known dead
        self.checked = 0.0  # when the cluster's slots were last compared with the pool
        self.strikes: dict[str, int] = {}  # node -> windows that failed there in a row
        self.bad: dict[str, dict] = {}  # node -> why it gets no more windows

    def submit(self, spec: BackendSpec, name: str, plan_ref, index: int, tag: tuple, take: dict | None = None) -> None:
        # A GPU worker holds the cores its backend keeps busy (the simulated one none: it sleeps,
        # and 16 fake GPUs on a laptop must not take every core from the pose and encode tasks).
        held = (spec.num_gpus, min(1.0, spec.num_cpus) if spec.num_gpus else 0.0)
        if held not in self.idle:
            self.idle[held], self.live[held], self.queue[held] = [], 0, []
            if self._slots(held) == 0:
                raise FarmError("backend", f"needs {held[0]:g} GPU per worker and the Ray cluster has "
                                f"{ray.cluster_resources().get('GPU', 0):g}",
                                "run on a cluster with GPUs, set backend.device=cpu, or pick the CPU puppet (backend=puppet)")
            self._top_up(held)
        # A re-take goes first: its shot waits for it (and qa.abort_below stops a bad shot sooner).
        self.queue[held].insert(0 if take else len(self.queue[held]), (name, plan_ref, index, tag, take or {}))

    def queued(self) -> bool:
        """Windows wait for an actor (one may be starting)."""
        return any(self.queue.values())

    def waiting_for(self) -> list[ray.ObjectRef]:
        """What the campaign loop also waits on: the actors still starting."""
        return list(self.starting)

    def started(self, ref: ray.ObjectRef) -> bool:
        """Take the news of a starting actor: ready (it gets windows now) or dead. False when `ref`
        is not one of the pool's."""
        if ref not in self.starting:
            return False
        held, actor = self.starting.pop(ref)
        try:
            node = ray.get(ref)
        except ray.exceptions.RayError:  # its node went before it started
            self._lost(held, actor)
            return True
        if node in self.bad:  # placed before its node was blocked
            self._lost(held, actor)
            return True
        self.idle[held].append((actor, node))
        return True

    def dispatch(self, waiting: dict, wanted) -> None:
        """Hand queued windows to idle actors; `wanted(tag)` is False for a window of a failed shot.
        At most once a second, while windows wait for an actor, the pool is fitted to the cluster
        (a node may have joined, or gone while an actor was starting on it). With no actor left and
        no slot in the cluster (its last GPU node gone, or blocked), the waiting windows fail:
        nothing would ever render them."""
        starved = []
        for held, queue in self.queue.items():
            if queue and not self.idle[held] and time.monotonic() - self.checked > 1.0:
                self.checked = time.monotonic()
                self._fit(held)
                if self.live[held] == 0:
                    starved += [(held, item) for item in queue if wanted(item[3])]
                    queue.clear()
            while queue and self.idle[held]:
                name, plan_ref, index, tag, take = queue.pop(0)
                if not wanted(tag):
                    continue
                actor, node = self.idle[held].pop()
                ref = actor.render.options(name="window").remote(plan_ref, index, **take)  # see _options
                self.busy[ref] = (held, actor, node, time.monotonic())
                waiting[ref] = tag
        for held, (name, _, index, tag, _) in starved:
            tag[1](self._starved(held, f"{name} (window {index})"))

    def expired(self) -> list[tuple[ray.ObjectRef, str]]:
        """Windows that have run longer than the timeout, with the node each ran on: their actors
        are killed (a hung GPU), counted against their nodes and replaced; each is a failed try of
        its window."""
        if not self.timeout:
            return []
        now = time.monotonic()
        late = [(ref, busy[2]) for ref, busy in self.busy.items() if now - busy[3] > self.timeout]
        for ref, _ in late:
            self.release(ref, broken=True, failure=f"no result within runtime.window_timeout_s ({self.timeout:g} s)")
        return late

    def close(self) -> None:
        """End the actors (their processes and the models they hold)."""
        for actors in self.idle.values():
            for actor, _ in actors:
                ray.kill(actor)
        for busy in [*self.busy.values(), *self.starting.values()]:
            ray.kill(busy[1])
        self.idle, self.busy, self.starting = {}, {}, {}

    def release(self, ref: ray.ObjectRef, *, broken: bool = False, failure: str | None = None, ok: bool = True) -> str | None:
        """The actor that ran `ref` is free again; returns the node it ran on. One whose process or
        node died (broken) is let go and replaced while the cluster has a slot for it. `failure`:
        why the window failed there, when that was not the input's fault (counted against the node);
        ok: it rendered (the node's count starts again). A window that failed on its input is neither."""
        if ref not in self.busy:
            return None
        held, actor, node, _ = self.busy.pop(ref)
        if failure is None:
            if ok:
                self.strikes[node] = 0
        else:
            self.strikes[node] = self.strikes.get(node, 0) + 1
            if self.bad_after and self.strikes[node] >= self.bad_after and node not in self.bad:
                self._block(node, failure)
        if broken or node in self.bad:
            self._lost(held, actor)
        else:
            self.idle[held].append((actor, node))
        return node

    def _block(self, node: str, failure: str) -> None:
        """No more windows of this campaign on `node`: its idle actors go now, busy ones when their
        window ends; new actors are placed on other nodes."""
        self.bad[node] = entry = {"node": node, "failures": self.strikes[node], "last_failure": failure,
                                  "at": round(time.time(), 3)}
        for held, actors in self.idle.items():
            for actor, where in [a for a in actors if a[1] == node]:
                actors.remove((actor, where))
                ray.kill(actor)
                self.live[held] -= 1
        for held in self.idle:
            self._fit(held)
        self.on_block(node, entry)

    def _starved(self, held: tuple[float, float], what: str) -> FarmError:
        kind = f"{held[0]:g} GPU" if held[0] else "a CPU"
        if self.bad:
            nodes = ", ".join(f"{node[:12]} ({entry['failures']} failures, last: {entry['last_failure']})"
                              for node, entry in self.bad.items())
            return FarmError(what, f"no worker is left to render it: every node of the Ray cluster with {kind} is lost or on "
                             f"this campaign's bad-node list (windows failed there {self.bad_after} times in a row): {nodes}",
                             "check those nodes (campaign.json lists them under bad_nodes), then run the campaign again "
                             "(finished windows are kept); runtime.bad_node_failures=0 turns the list off")
        return FarmError(what, f"no worker is left to render it: no node of the Ray cluster has {kind} "
                         "any more (nodes were lost)", "run the campaign again when the cluster has its nodes back "
                         "(finished windows are kept)")

    def _lost(self, held: tuple[float, float], actor) -> None:
        ray.kill(actor)
        self.live[held] -= 1
        self._fit(held)

    def _slots(self, held: tuple[float, float]) -> int:
        """Actors of this kind the cluster's live nodes (less the blocked ones) have room for: one
        per GPU slot, or one per CPU."""
        if self.bad:
            resources: dict[str, float] = {}
            for node in ray.nodes():
                if node.get("Alive") and node["NodeID"] not in self.bad:
                    for key, value in node.get("Resources", {}).items():
                        resources[key] = resources.get(key, 0.0) + value
        else:
            resources = ray.cluster_resources()
        gpus = held[0]
        if gpus:
            return int(resources.get("GPU", 0) // gpus)
        return int(resources.get("CPU", 0)) if self.bad else max(1, int(resources.get("CPU", 0)))

    def _fit(self, held: tuple[float, float]) -> None:
        """Let go of starting actors the cluster has no room for any more, then top up."""
        extra = self.live[held] - self._slots(held)
        for ref in [r for r, (h, _) in self.starting.items() if h == held][: max(0, extra)]:
            _, actor = self.starting.pop(ref)
            ray.kill(actor)
            self.live[held] -= 1
        self._top_up(held)

    def _top_up(self, held: tuple[float, float]) -> None:
        gpus, cpus = held
        options = {"num_cpus": cpus, "num_gpus": gpus} if gpus else {"num_cpus": 0, "scheduling_strategy": "SPREAD"}
        if self.bad:  # not on a blocked node (every Ray node carries its id as a label)
            options["label_selector"] = {"ray.io/node-id": f"!in({','.join(self.bad)})"}
        for _ in range(self._slots(held) - self.live[held]):
            # No restarts and no task retries by Ray: the pool replaces a dead actor where there is
            # room, and the shot queues its window again.
            actor = _Generator.options(**options, max_restarts=0, max_task_retries=0).remote()
            self.starting[actor.node.remote()] = (held, actor)
            self.live[held] += 1


def _title(text: str) -> None:
    """The worker's process title while it runs this task: `ray::window <shot> <index>`, where Ray
    shows the task name only (by kind, see _options). Ray sets the title back after the task."""
    setter = getattr(getattr(ray, "_raylet", None), "setproctitle", None)
    if setter is not None:
        setter(f"ray::{text}")


@ray.remote
def _segment(plan: ShotPlan, index: int, logs: list[dict]) -> dict:
    _title(f"segment {plan.shot_id} {index}")
    return encode_segment(plan, plan.segments[index], logs, worker=f"{socket.gethostname()}:{os.getpid()}")


@ray.remote
def _preview(plan: ShotPlan) -> dict:
    _title(f"preview {plan.shot_id}")
    return make_preview(plan)


@ray.remote
def _finish(plan: ShotPlan, logs: list[dict], segments: list[dict], preview: dict | None) -> ShotResult:
    return finish_shot(plan, logs, segments, preview=preview)


class _Run:
    """What the shots of one campaign run share: where they go, the generator pool, the Ray work
    in flight (ref -> the shot and the method its result goes to), and which shot renders each
    output folder (identical shots render once)."""

    def __init__(self, out_root: Path | str, force: bool | frozenset[str], max_retries: int, progress: Progress, library: str | None,
                 window_timeout: float | None = None, bad_after: int = 0) -> None:
        self.out_root, self.force, self.max_retries, self.progress = out_root, force, max_retries, progress
        self.library = library
        self.generators = _GeneratorPool(max_retries, window_timeout, bad_after, progress.node_blocked)
        self.waiting: dict[ray.ObjectRef, tuple[_ShotRun, Callable]] = {}
        self.owners: dict[str, _ShotRun] = {}
        self.in_flight = 0  # admitted shots without a result (each may hold a plan)
        self.peak = 0  # the most shots in flight at once in this run
        self.extracting: dict[str, int] = {}  # motion (as given, with its pose settings) -> shots planning it

    def task(self, remote, name: str, shot: _ShotRun, deliver: Callable, *args, returns: int = 1):
        """Start a CPU task (plan, preview, segment, finish) whose (first) result goes to `deliver` of `shot`."""
        refs = remote.options(**_options(self.max_retries, name.split(" ", 1)[0]), num_returns=returns).remote(*args)
        first = refs[0] if returns > 1 else refs
        self.waiting[first] = (shot, deliver)
        return refs

    def window(self, shot: _ShotRun, index: int) -> None:
        """Queue window `index` of `shot` for the next free generator."""
        take = shot.retaking.get(index)
        name = f"window {shot.plan.shot_id} {index}" + (f" take {take['take']}" if take else "")
        self.generators.submit(backend_spec(shot.cfg), name, shot.plan_ref, index, (shot, partial(shot.window_done, index)), take)

    def drop(self, shots: list[_ShotRun]) -> None:
        """The run is cancelled: shots already finishing (committing their take) end and are
        recorded; the other CPU tasks in flight are stopped (windows end with their generators, when
        the pool closes); each started shot not done is now "cancelled" (with its windows done)."""
        finishing = [ref for ref, (shot, _) in self.waiting.items() if shot.state == "finishing"]
        ray.wait(finishing, num_returns=len(finishing), timeout=120.0)
        for ref in finishing:
            shot, deliver = self.waiting.pop(ref)
            try:
                deliver(ray.get(ref, timeout=0))
            except (ray.exceptions.RayError, FarmError) as exc:
                deliver(exc)
        for ref in self.waiting:
            if ref not in self.generators.busy:
                ray.cancel(ref)
        self.waiting.clear()
        for shot in shots:
            if not shot.done:
                shot._move("cancelled")

    def stalled(self) -> None:
        """Windows past runtime.window_timeout_s: each is a failed try of its window (its generator
        was killed and is replaced)."""
        for ref, node in self.generators.expired():
            shot, deliver = self.waiting.pop(ref)
            if not shot.done:
                deliver(WindowStalled(self.generators.timeout), node=node)

    def forced(self, shot: Shot) -> bool:
        """Render `shot` again even when it is finished."""
        return self.force if isinstance(self.force, bool) else shot.shot_id in self.force

    def owner(self, uri: str, shot: _ShotRun) -> _ShotRun:
        """The shot that renders the folder `uri` in this run: the first one to claim it."""
        return self.owners.setdefault(uri, shot)

    def admitted(self, change: int) -> None:
        self.in_flight += change
        self.peak = max(self.peak, self.in_flight)

    def waits(self, shot: Shot, cfg: FarmConfig | FarmError) -> bool:
        """With the motion library: a shot of a motion another shot is planning now waits for that
        plan, and takes the poses it keeps instead of extracting them again."""
        return self.library is not None and not isinstance(cfg, FarmError) and _motion(shot, cfg) in self.extracting

    def planning(self, shot: _ShotRun, change: int) -> None:
        if self.library is not None:
            key = _motion(shot.shot, shot.cfg)
            self.extracting[key] = self.extracting.get(key, 0) + change
            if not self.extracting[key]:
                del self.extracting[key]


class _ShotRun:
    """One shot on the driver, from its plan to its result, as a small state machine:
    planning -> rendering (windows pending) -> encoding (segments) -> finishing -> done | failed.
    One method per event; each starts the shot's next work through the campaign run."""

    def __init__(self, run: _Run, shot: Shot, cfg: FarmConfig, position: int) -> None:
        self.run, self.shot, self.cfg, self.position = run, shot, cfg, position
        self.state = "queued"
        self.plan: ShotPlan | None = None
        self.plan_ref: ray.ObjectRef | None = None  # the plan in the object store, for the workers
        self.logs: dict[int, dict] = {}  # window -> its log
        self.pending = 0  # windows not rendered yet
        self.tries: dict[int, list[dict]] = {}  # window -> its failed tries (generator died or hung): node, reason
        self.takes: Takes | None = None  # qa.retakes / qa.abort_below: the windows' takes
        self.retaking: dict[int, dict] = {}  # window -> the re-take it is being rendered as
        self.held: dict[int, int] = {}  # chained: window -> the window waiting for it
        self.new: list[int] = []  # output frames each window adds (progress)
        self.segments: dict[int, dict] = {}  # segment -> its log
        self.preview: dict | None = None  # the pose preview, drawn while the windows render (make_preview's log)
        self.previewing = False  # its task is running
        self.followers: list[_ShotRun] = []  # identical shots that take this one's result
        self.result: ShotResult | None = None
        self.admitted = False  # counted in the run's shots in flight

    @property
    def done(self) -> bool:
        return self.result is not None

    def start(self) -> None:
        self.admitted = True
        self.run.admitted(+1)
        self.run.planning(self, +1)
        self._move("planning")
        name = f"plan {self.shot.shot_id or Path(str(self.shot.motion)).name}"
        _, self.plan_ref = self.run.task(_plan, name, self, self.planned, self.shot, self.cfg, self.run.out_root,
                                         self.run.forced(self.shot), self.run.library, returns=2)

    def planned(self, value) -> None:
        self.run.planning(self, -1)
        if isinstance(value, BaseException):  # the plan task itself could not run (its worker kept dying)
            reason = FarmError(f"shot {self.shot.shot_id or self.shot.motion}", f"could not be planned: {_cause(value)}", "run again")
            self.end(record_failure(self.shot, self.cfg, self.run.out_root, reason))
            return
        if isinstance(value, ShotResult):  # finished before (reused), or failed in planning
            self.end(value)
            return
        owner = self.run.owner(value.uri, self)
        if owner is not self:  # the same inputs and config as another shot of this run
            self.plan_ref = None
            self._leave()  # waiting on another shot's result holds nothing: it makes room for the next shot
            owner.follow(self)
            return
        self.plan = value
        if checking(self.cfg.qa):
            self.takes = Takes(self.cfg.qa, value.shot_id, len(value.windows))
        self._move("rendering")
        self.new = new_frames(value.windows)  # progress counts output frames, overlaps once
        if self.cfg.output.pose_preview:  # drawn beside the windows, not after them
            self.previewing = True
            self.run.task(_preview, f"preview {value.shot_id}", self, self.preview_done, self.plan_ref)
        self.run.progress.frames(sum(self.new))
        for w, window in enumerate(value.windows):
            if value.has_window(window):  # a checkpoint from an interrupted run
                self.logs[w] = {**window.to_dict(), "reused": True}
                self.run.progress.frames_done(self.new[w])
                continue
            self.pending += 1
            before = value.previous_window(window)
            if before is not None and before.index not in self.logs:  # chained: it waits for the window it continues
                self.held[before.index] = w
            else:
                self.run.window(self, w)
        if self.pending == 0:
            self._encode()

    def window_done(self, w: int, value, node: str | None = None) -> None:
        if isinstance(value, (ray.exceptions.RayActorError, WindowStalled)):
            tries = self.tries.setdefault(w, [])
            tries.append({"node": node, "reason": str(value) if isinstance(value, WindowStalled) else
                          f"its worker process or node died ({type(value).__name__})"})
            if len(tries) <= self.run.max_retries:  # another generator takes it
                self.run.window(self, w)
                return
        if isinstance(value, BaseException):  # the first failed window fails the shot
            self._fail(_window_failure(value, self.plan.windows[w], self.run.max_retries))
            return
        if w in self.tries:  # the manifest keeps the tries that failed before this one
            value = {**value, "failed_tries": self.tries.pop(w)}
        if self.takes is not None:
            again = self.takes.add(w, value)
            if again is not None:  # it failed its check: the next take, with the next seed
                self.retaking[w] = again
                self.run.window(self, w)
                return
            self.retaking.pop(w, None)
            value = self.takes.settle(w)
            stop = self.takes.stopped(w, value)
            if stop is not None:
                self._fail(stop)
                return
        self.logs[w] = value
        self.pending -= 1
        self._move("rendering")
        self.run.progress.frames_done(self.new[w])
        if w in self.held:  # chained: the next window of the chain can go now
            self.run.window(self, self.held.pop(w))
        if self.pending == 0:
            self._encode()

    def segment_done(self, k: int, value) -> None:
        if isinstance(value, BaseException):
            self._fail(_cause(value))
            return
        self.segments[k] = value
        self._finish()

    def preview_done(self, value) -> None:
        if isinstance(value, BaseException):
            self._fail(_cause(value))
            return
        self.previewing, self.preview = False, value
        self._finish()

    def _finish(self) -> None:
        """Every segment is encoded and the preview drawn: join, record, commit."""
        if len(self.segments) == len(self.plan.segments) and not self.previewing:
            self._move("finishing")
            logs = [self.logs[w] for w in range(len(self.plan.windows))]
            segments = [self.segments[s] for s in range(len(self.plan.segments))]
            self.run.task(_finish, f"finish {self.plan.shot_id}", self, self.finished, self.plan_ref, logs, segments,
                          self.preview)

    def finished(self, value) -> None:
        self.end(value if isinstance(value, ShotResult) else self._failure(_cause(value)))

    def follow(self, other: _ShotRun) -> None:
        """`other` renders the same folder: it takes this shot's result (now, if there is one)."""
        self.followers.append(other)
        if self.done:
            self.end(self.result)

    def end(self, result: ShotResult) -> None:
        if self.result is None:
            self.result, self.state = result, "failed" if result.status == "failed" else "done"
            self.plan = self.plan_ref = None  # let go of the plan (character image, poses) as soon as the shot is done
            self.logs, self.segments, self.preview = {}, {}, None
            self.takes, self.retaking = None, {}  # a stopped shot's unsettled takes go too (DESIGN §13)
            self._leave()
            self.run.progress.shot_done(result, self.position)
        for other in self.followers:
            status = "failed" if result.status == "failed" else "reused"
            other.end(ShotResult(result.shot_id, status, result.folder, result.manifest, result.error, result.uri))
        self.followers = []

    def _encode(self) -> None:
        """Every window is in: stitch and encode the shot's segments in parallel (then finish joins them)."""
        self._move("encoding")
        logs = [self.logs[w] for w in range(len(self.plan.windows))]
        for segment in self.plan.segments:
            name = f"segment {self.plan.shot_id} {segment.index}"
            done = partial(self.segment_done, segment.index)
            self.run.task(_segment, name, self, done, self.plan_ref, segment.index, logs[: segment.stop])

    def _leave(self) -> None:
        """No longer in flight: the run may admit another shot."""
        if self.admitted:
            self.admitted = False
            self.run.admitted(-1)

    def _move(self, state: str) -> None:
        """The shot's new state, told to the campaign record (with its windows done so far)."""
        self.state = state
        windows = len(self.plan.windows) if self.plan is not None else None
        self.run.progress.shot_state(self.position, state, len(self.logs), windows)

    def _failure(self, exc: BaseException) -> ShotResult:
        plan = self.plan
        return fail_shot(self.shot, plan.folder, plan.record, plan.timings, exc, uri=plan.uri, cfg=self.cfg)

    def _fail(self, exc: BaseException) -> None:
        self.end(self._failure(exc))


def run_campaign(
    items: list[tuple[Shot, FarmConfig | FarmError]],
    out_root: Path | str,
    *,
    force: bool | frozenset[str] = False,
    max_retries: int = 3,
    max_in_flight: int | None = None,
    library: str | None = None,
    order: list[int] | None = None,
    progress: Progress | None = None,
    window_timeout: float | None = None,
    bad_node_failures: int = 0,
    cancelled: Callable[[], bool] | None = None,
) -> list[ShotResult]:
    """Render every shot; results come back in the order of `items`. A shot whose config could
    not be loaded (a FarmError in place of its config) is recorded as failed without running.
    force: render finished shots again: all (True), or those with these shot ids.
    max_in_flight: the most shots planned or rendering at once (None: admission_bound()).
    library: the motion library's folder (farm.pose.library); None: every shot extracts its poses.
    order: the positions of `items` in the order they start (admission_order); None: as given.
    window_timeout: seconds after which a window's generator counts as hung (killed, the window
    tried again); None: no limit. bad_node_failures: windows failed in a row on one node before it
    gets no more windows of this campaign; 0: never. cancelled: asked at least once a second; when
    it says True the run stops: no more shots start, the windows and tasks in flight are dropped
    (every checkpoint and output is written whole or not at all), and the shots done so far are
    returned (the others are left as they were, for a later run to finish)."""
    progress = progress or Progress()
    progress.shots(len(items))
    bound = max_in_flight or admission_bound()
    run = _Run(out_root, force, max_retries, progress, library, window_timeout, bad_node_failures)
    shots: list[_ShotRun] = []
    waiting = ((i, items[i]) for i in order) if order is not None else iter(enumerate(items))
    upcoming = [next(waiting, None)]  # the next shot to admit, None at the end

    def admit() -> None:
        """Start shots in their order while there is room (a shot that fails before planning takes
        none); the next shot waits while another shot plans its motion."""
        while run.in_flight < bound and upcoming[0] is not None and not run.waits(*upcoming[0][1]):
            position, (shot, cfg) = upcoming[0]
            upcoming[0] = next(waiting, None)
            shots.append(_ShotRun(run, shot, cfg, position))
            if isinstance(cfg, FarmError):
                shots[-1].end(record_failure(shot, None, out_root, cfg))
            else:
                shots[-1].start()

    admit()
    busy, took = _EventTimes(), None
    try:
        while True:
            # Windows go to generators as they free up (every turn: a shot's event may queue some).
            run.generators.dispatch(run.waiting, lambda tag: not tag[0].done)
            if took is not None:  # the driver's time on the last event: its delivery, admissions, dispatch
                busy.add(time.perf_counter() - took)
                took = None
            if not run.waiting and not run.generators.queued():  # nothing in flight: admit what is left, or the campaign is done
                run.extracting.clear()  # (nothing can be planning now: never hold a shot back for it)
                admitted = len(shots)
                admit()
                if len(shots) == admitted:
                    break
                continue
            # A second at most, so the pool looks at the cluster while windows wait for an actor.
            ready, _ = ray.wait([*run.waiting, *run.generators.waiting_for()], num_returns=1, timeout=1.0)
            if cancelled is not None and cancelled():
                run.drop(shots)
                break
            run.stalled()
            if not ready or run.generators.started(ready[0]) or ready[0] not in run.waiting:  # (or given up as hung just now)
                continue
            ref, took = ready[0], time.perf_counter()
            shot, deliver = run.waiting.pop(ref)
            try:
                value = ray.get(ref)
            except (ray.exceptions.RayError, FarmError) as exc:
                value = exc
            node = run.generators.release(ref, broken=isinstance(value, ray.exceptions.RayActorError),
                                          failure=_node_failure(value), ok=not isinstance(value, BaseException))
            if shot.done:  # the shot already failed on another window; drop what is left of it
                continue
            try:
                deliver(value, node=node) if node is not None else deliver(value)
            except FarmError as exc:  # the store failed while recording this shot: the others go on
                shot.end(ShotResult(shot.shot.shot_id or "?", "failed", Path("."), {}, str(exc), ""))
            admit()
    finally:
        run.generators.close()  # the pool lives as long as its campaign
        progress.admission(bound, run.peak, busy.to_dict())
    return [shot.result for shot in sorted(shots, key=lambda s: s.position) if shot.result is not None]


class _EventTimes:
    """How long the driver spends on each event of a run (a plan head, a window, a segment or a
    result coming back): counted in fixed buckets, 20 a decade from 1 µs to 10 s, so what the run
    keeps does not grow with the campaign."""

    EDGES = np.logspace(-6, 1, 141)

    def __init__(self) -> None:
        self.counts = np.zeros(len(self.EDGES) + 1, dtype=np.int64)
        self.seconds = 0.0

    def add(self, seconds: float) -> None:
        self.counts[np.searchsorted(self.EDGES, seconds)] += 1
        self.seconds += seconds

    def quantile(self, q: float) -> float | None:
        """The upper edge of the bucket holding the q-quantile (at most 12% above it)."""
        total = int(self.counts.sum())
        if total == 0:
            return None
        bucket = int(np.searchsorted(np.cumsum(self.counts), q * total))
        return float(self.EDGES[min(bucket, len(self.EDGES) - 1)])

    def to_dict(self) -> dict:
        ms = {q: self.quantile(q) for q in (0.5, 0.9)}
        return {"events": int(self.counts.sum()), "busy_seconds": round(self.seconds, 3),
                "median_ms": None if ms[0.5] is None else round(ms[0.5] * 1000, 3),
                "p90_ms": None if ms[0.9] is None else round(ms[0.9] * 1000, 3)}


def admission_order(
    items: list[tuple[Shot, FarmConfig | FarmError]],
    priorities: list[int] | None = None,
    durations: dict[str, float] | None = None,
) -> list[int]:
    """The positions of `items` in the order they should start: priority (higher first), then the
    longest motion first, then as given. durations: seconds of motions already known, by the
    motion as the shot names it (the motion library's); the others are probed once each (a
    campaign has few distinct motions). A motion that cannot be read sorts last: its plan fails."""
    known = dict(durations or {})

    def seconds(shot: Shot, cfg: FarmConfig | FarmError) -> float:
        if isinstance(cfg, FarmError):
            return 0.0
        motion = str(shot.motion)
        if motion not in known:
            known[motion] = _duration(motion, cfg)
        return known[motion]

    def rank(i: int) -> tuple[int, float, int]:
        shot, cfg = items[i]
        return -(priorities[i] if priorities else 0), -seconds(shot, cfg), i

    return sorted(range(len(items)), key=rank)


def _duration(motion: str, cfg: FarmConfig) -> float:
    try:
        probe = probe_motion(fetch_input(motion, storage_for(cfg), cfg), cfg)
        return probe.frame_count / probe.fps
    except Exception:  # noqa: BLE001 - the shot's own plan reports what is wrong with its motion
        return 0.0


def _motion(shot: Shot, cfg: FarmConfig) -> str:
    """A motion as a campaign names it, with what changes its poses (as the library keys them: the
    pose settings, motion.subject, the parts the shot's backend reads)."""
    options = shot_pose_options(cfg, backend_spec(cfg))
    return json.dumps([str(shot.motion), asdict(options), cfg.pose.model], sort_keys=True, default=str)


def admission_bound() -> int:
    """Shots in flight by default: twice the generator slots of the cluster (one actor per GPU, or
    per CPU for a CPU backend), so that while one shot's windows render the next one's plan is
    ready, and a few plans more than that never wait in the driver."""
    resources = ray.cluster_resources()
    slots = max(int(resources.get("GPU", 0)), int(resources.get("CPU", 1)), 1)
    return 2 * slots


def _options(max_retries: int, kind: str) -> dict:
    """Resources of a CPU task (plan, preview, segment, finish): one CPU, no GPU. Retries cover dead
    workers only (bad input does not get better). The Ray task name is the kind of work ("plan",
    "preview", "segment", "finish"; "window" for the generators), what `ray list tasks` shows (the process title names
    the shot, see _title): never the shot, as Ray keeps metrics per task name (in the driver and in what Prometheus
    scrapes), and a name per shot made the driver's memory grow by about 0.3 MB a shot
    (farm status and campaign.json say which shot is where)."""
    return {"num_cpus": 1, "num_gpus": 0, "max_retries": max_retries, "retry_exceptions": False, "name": kind}


def _window_failure(exc: BaseException, window, max_retries: int) -> BaseException:
    """A window's error as the user should read it: its own FarmError, or what happened to its worker."""
    cause = _cause(exc)
    tries = max_retries + 1
    where = f"window {window.index} (frames {window.start}-{window.end - 1})"
    if isinstance(exc, WindowStalled):
        times = f"{tries} time{'s' if tries > 1 else ''}"
        return FarmError(where, f"gave no result within runtime.window_timeout_s ({exc.seconds:g} s), {times} "
                         "(its generator was stopped each time)",
                         "raise runtime.window_timeout_s if windows of this backend really take that long; otherwise check the "
                         "GPU nodes (campaign.json lists blocked ones under bad_nodes) and run the campaign again (finished "
                         "windows are kept)")
    if isinstance(cause, FarmError) or not isinstance(exc, ray.exceptions.RayError) or isinstance(exc, ray.exceptions.RayTaskError):
        return cause
    return FarmError(
        where,
        f"its worker process died {tries} time{'s' if tries > 1 else ''} ({type(exc).__name__})",
        "run the campaign again (finished windows are kept); if it keeps dying, check memory and the Ray worker logs, "
        "or raise runtime.max_retries",
    )


class WindowStalled(Exception):
    """A window's generator gave no result within runtime.window_timeout_s (a hung GPU): a failed try."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no result within runtime.window_timeout_s ({seconds:g} s): its generator was stopped")
        self.seconds = seconds


def _node_failure(value) -> str | None:
    """Why a window failed on its node, when that counts against the node (a worker that died, an
    error that is not about the input); None for a result, an error of the input's, or a lost object
    (the node that held it is to blame, not this one)."""
    if isinstance(value, ray.exceptions.RayActorError):
        return f"its worker process died ({type(value).__name__})"
    if isinstance(value, ray.exceptions.RayTaskError):
        cause = _cause(value)
        if not isinstance(cause, FarmError):
            return f"{type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}"
    return None


def _cause(exc: BaseException) -> BaseException:
    """The user-facing error inside a Ray error, when there is one."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
