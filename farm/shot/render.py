"""All the stages of one shot in this process: motion video + character image -> video.mp4 + record.

`render_shot` strings the stages of `farm.shot` together, in the order of DESIGN §2:

    <out>/<shot_id>/video.mp4  manifest.json  pose_preview.mp4  poses/*.parquet  qa.parquet  report.html

Nothing partial is ever visible: the video is renamed into place only once complete, the manifest
is written last, and a failed shot leaves a manifest with `status: failed` and no video.
"""
from __future__ import annotations

from pathlib import Path

from farm.backends.base import Backend
from farm.config import FarmConfig
from farm.errors import FarmError
from farm.qa.window import Takes, checking
from farm.shot.finish import finish_shot
from farm.shot.outcome import ShotResult, fail_shot, record_failure
from farm.shot.plan import plan_shot
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
    from an interrupted run are reused. Raises FarmError when another run is writing the shot."""
    reporter = reporter or Silent()
    # 1. Load the backend (the model, for diffusion backends).
    try:
        backend = backend or make_backend(cfg)
    except FarmError as exc:
        return record_failure(shot, cfg, out_root, exc)

    # 2. Plan: inputs, character, pose, preflight, retarget, windows (or the shot is done already).
    planned = plan_shot(shot, cfg, out_root, backend.spec, reporter=reporter, force=force)
    if isinstance(planned, ShotResult):
        return planned

    # 3. Hold the shot's folder: another run writing it now is named, and this one stops (FarmError).
    with Lease(storage_for(cfg), planned.uri):
        # 4. Render every window, writing its checkpoint.
        try:
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
                reporter.advance(new)  # output frames: overlaps count once
        except Exception as exc:  # noqa: BLE001 - recorded in the manifest
            return fail_shot(planned.shot, planned.folder, planned.record, planned.timings, exc, uri=planned.uri, cfg=cfg)

        # 5. Stitch, encode, measure, report, commit.
        return finish_shot(planned, logs)
