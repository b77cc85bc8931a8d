"""All the stages of one shot in this process: motion video + character image -> video.mp4 + record.

`render_shot` strings the stages of `farm.shot` together, in the order of DESIGN §2:

    <out>/<shot_id>/video.mp4  manifest.json  pose_preview.mp4  poses/*.parquet  qa.parquet  report.html

Nothing partial is ever visible: the video is renamed into place only once complete, the manifest
is written last, and a failed shot leaves a manifest with `status: failed` and no video.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path

from farm.backends.base import Backend
from farm.config import FarmConfig
from farm.errors import FarmError
from farm.pose.extract import PoseSequence
from farm.qa.window import Takes, checking
from farm.shot.finish import finish_shot, write_pose_artifacts
from farm.shot.outcome import ShotResult, fail_shot, record_failure
from farm.shot.plan import extract_in_process, local_cpus, plan_shot
from farm.shot.planned import ShotPlan
from farm.shot.segment import encode_segment
from farm.shot.tools import make_backend, storage_for
from farm.shot.types import Reporter, Shot, Silent, timed
from farm.shot.window import render_window
from farm.storage.lease import Lease
from farm.windows import new_frames


def render_shot(
    shot: Shot,
    cfg: FarmConfig,
    out_root: Path | str,
    *,
    backend: Backend | None = None,
    reporter: Reporter | None = None,
    force: bool = False,
) -> ShotResult:
    """Render one shot into `out_root/<shot_id>/`, in this process. Never raises for a bad shot:
    the result (and the manifest on disk) says `failed` with the reason. Windows already on disk
    from an interrupted run are reused. Raises FarmError when another run is writing the shot.

    With runtime.stream (the default) the stages overlap on the machine's cores: the people in
    the video are counted while the poses are extracted, the pose artifacts are written while the
    windows render, and the windows already rendered are stitched, measured and encoded while the
    next ones render. The video is the same as one stage after the other makes."""
    reporter = reporter or Silent()
    stream = cfg.runtime.stream
    # 1. Load the backend (the model, for diffusion backends).
    try:
        backend = backend or make_backend(cfg)
    except FarmError as exc:
        return record_failure(shot, cfg, out_root, exc)

    # 2. Plan: inputs, character, pose, preflight, retarget, windows (or the shot is done already).
    if stream:  # the people counted and the poses extracted on one thread per CPU
        workers = local_cpus()
        with ThreadPoolExecutor(workers, thread_name_prefix="pose") as pool:
            planned = plan_shot(shot, cfg, out_root, backend.spec, reporter=reporter, force=force,
                                people=partial(_count_alongside, pool),
                                extract=partial(extract_in_process, chunk_frames=cfg.runtime.pose_chunk_frames,
                                                workers=workers, pool=pool))
    else:
        planned = plan_shot(shot, cfg, out_root, backend.spec, reporter=reporter, force=force)
    if isinstance(planned, ShotResult):
        return planned

    # 3. Hold the shot's folder: another run writing it now is named, and this one stops (FarmError).
    with Lease(storage_for(cfg), planned.uri):
        # 4. Render every window, writing its checkpoint; 5. stitch, encode, measure, report, commit.
        if not stream:
            try:
                logs = _render_windows(backend, planned, reporter)
            except Exception as exc:  # noqa: BLE001 - recorded in the manifest
                return fail_shot(planned.shot, planned.folder, planned.record, planned.timings, exc, uri=planned.uri, cfg=cfg)
            return finish_shot(planned, logs)
        return _render_streaming(backend, planned, reporter)


def _render_windows(backend: Backend, planned: ShotPlan, reporter: Reporter, made: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Prepare the backend and render every window in order (with its re-takes, qa.retakes);
    `made(index, log)` is told of each as it is done. Raises what stops the shot."""
    cfg = planned.cfg
    with timed(planned.timings, "prepare"):
        backend.prepare(planned.character, planned.canvas)
    reporter.stage("render", len(planned.targets))
    logs = []
    takes = Takes(cfg.qa, planned.shot_id, len(planned.windows)) if checking(cfg.qa) else None
    for window, new in zip(planned.windows, new_frames(planned.windows)):
        log = render_window(backend, planned, window)
        while takes is not None and (again := takes.add(window.index, log)) is not None:
            log = render_window(backend, planned, window, **again)  # a re-take (qa.retakes)
        if takes is not None:
            log = takes.settle(window.index)
            stop = takes.stopped(window.index, log)
            if stop is not None:
                raise stop
        logs.append(log)
        if made is not None:
            made(window.index, log)
        reporter.advance(new)  # output frames: overlaps count once
    return logs


def _render_streaming(backend: Backend, planned: ShotPlan, reporter: Reporter) -> ShotResult:
    """Steps 4-5 overlapped: the windows render on one thread and the pose artifacts are written on
    another while this one stitches, measures and encodes each segment as its windows arrive. A
    failure anywhere stops the others and fails the shot, leaving no take behind."""
    cfg = planned.cfg
    windows = _Arrivals()
    segments = _Segments(planned, windows)
    with ThreadPoolExecutor(3, thread_name_prefix=f"shot-{planned.shot_id}") as pool:
        rendering = pool.submit(_render_windows, backend, planned, reporter, windows.made)
        rendering.add_done_callback(windows.finished)
        artifacts = pool.submit(write_pose_artifacts, planned)
        # Once the windows are all rendered their thread's core is free: a second encoder takes the
        # segments not yet started (the encoding side otherwise finishes alone, on one core).
        second = pool.submit(segments.encode, after=rendering)
        try:
            segments.encode()
            second.result()
            segment_logs = segments.logs()
            logs = rendering.result()
        except BaseException as exc:  # the render's own failure comes here through windows.wait
            windows.cancel()
            segments.stop()
            wait([rendering, artifacts, second])  # nothing writes into the take once it is removed
            if not isinstance(exc, Exception):  # Ctrl-C: the windows rendered so far stay for the rerun
                raise
            return fail_shot(planned.shot, planned.folder, planned.record, planned.timings, exc, uri=planned.uri,
                             cfg=cfg, take=planned.take)
        return finish_shot(planned, logs, segment_logs, pose_artifacts=artifacts.result)


class _Arrivals:
    """The windows rendered so far, for the thread that encodes them: wait(w) blocks until window w
    is rendered (windows render in order) and returns the logs so far, or raises once rendering
    failed or was cancelled."""

    def __init__(self) -> None:
        self.logs: list[dict] = []
        self.failed: BaseException | None = None
        self.changed = threading.Condition()

    def made(self, index: int, log: dict) -> None:
        with self.changed:
            if self.failed is not None:  # the encoding side has given up: stop rendering
                raise self.failed
            self.logs.append(log)
            self.changed.notify_all()

    def finished(self, future: Future) -> None:
        if future.cancelled() or future.exception() is not None:
            with self.changed:
                self.failed = self.failed or future.exception() or RuntimeError("window rendering was cancelled")
                self.changed.notify_all()

    def cancel(self) -> None:
        with self.changed:
            self.failed = self.failed or _Cancelled("the shot stopped while its windows were rendering")
            self.changed.notify_all()

    def wait(self, index: int) -> list[dict]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.logs) > index or self.failed is not None)
            if len(self.logs) > index:
                return self.logs
            raise self.failed


class _Cancelled(Exception):
    pass


class _Segments:
    """A shot's segments, handed out in order to the threads that encode them (each as its windows
    arrive, see _Arrivals.wait); stop() hands out no more."""

    def __init__(self, planned: ShotPlan, windows: _Arrivals) -> None:
        self.planned, self.windows = planned, windows
        self.todo = list(reversed(planned.segments))
        self.done: dict[int, dict] = {}
        self.lock = threading.Lock()

    def encode(self, after: Future | None = None) -> None:
        """Encode segments until none is left; after: start once that future is done."""
        if after is not None:
            wait([after])
        while (segment := self._next()) is not None:
            self.done[segment.index] = encode_segment(self.planned, segment, [], ready=self.windows.wait)

    def _next(self):
        with self.lock:
            if self.windows.failed is not None:  # what stopped the windows stops the shot
                raise self.windows.failed
            return self.todo.pop() if self.todo else None

    def stop(self) -> None:
        with self.lock:
            self.todo.clear()

    def logs(self) -> list[dict]:
        return [self.done[segment.index] for segment in self.planned.segments]


def _count_alongside(pool: Executor, video: Path) -> Callable[[PoseSequence], tuple[int, str]]:
    """Run the people detectors on the video in `pool`, beside the pose chunks (the preflight
    waits for them). They go in first: one thread detects while the others start on the poses."""
    from farm.qa.preflight import others_seen

    seen = pool.submit(others_seen, video)
    return lambda poses: seen.result().count(poses)
