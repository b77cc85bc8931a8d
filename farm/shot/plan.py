"""Steps 2-6 of a shot: character, performer's pose, preflight, retarget and window plan (`plan_shot`),
which make its `ShotPlan` (farm.shot.planned)."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np

from farm.backends.base import BackendSpec
from farm.config import FarmConfig
from farm.errors import FarmError
from farm.manifest import SCHEMA_VERSION, versions
from farm.media.probe import VideoProbe
from farm.native import give_memory_back
from farm.pose.extract import PoseOptions, PoseSequence
from farm.provenance.rights import check_rights
from farm.provenance.watermark import SCHEME, code_hex, watermark_code
from farm.shot.inputs import as_given, content_key, fallback_id, fetch_inputs, probe_inputs
from farm.shot.outcome import ShotResult, claim, fail_shot, finished, reuse_verdict
from farm.shot.planned import ShotPlan, unmarked
from farm.shot.tools import shot_pose_options, stage_root, storage_for
from farm.shot.types import Reporter, Shot, Silent, progress_callback, timed
from farm.storage import Storage
from farm.types import Canvas, check_shot_id
from farm.windows import Window, plan_chained_windows, plan_windows


def plan_shot(
    shot: Shot,
    cfg: FarmConfig,
    out_root: Path | str,
    spec: BackendSpec,
    *,
    reporter: Reporter | None = None,
    force: bool = False,
    extract: Callable[[Path, int, PoseOptions, Reporter], PoseSequence] | None = None,
    people: Callable[[Path], Callable[[PoseSequence], tuple[int, str]]] | None = None,
    library: str | None = None,
) -> ShotPlan | ShotResult:
    """Steps 1-6 of a shot: inputs, character, pose, preflight, retarget, window plan. Returns the
    plan, or the final result when the shot is already finished (reused) or failed.

    extract(video, frame_count, options, reporter): how the performer's poses are extracted; by
    default in this process, front to back (the Ray runtime passes one that shards long videos).
    people(video): starts the people detectors on the video and returns how to finish the count
    from the performer's poses (farm.qa.preflight.others_seen); the Ray runtime runs them on
    another worker while the poses are extracted.
    library: the motion library's folder (farm.pose.library): the poses and people count of a
    motion are taken from there when an earlier shot extracted them, and kept there when not.
    None: always extracted.
    """
    reporter = reporter or Silent()
    cfg = _with_backend_defaults(cfg, spec)
    record: dict = {"schema_version": SCHEMA_VERSION, "status": "running", "prompt": shot.prompt or cfg.prompt, "rights": shot.rights}
    timings: dict[str, float] = {}
    check_shot_id(shot.shot_id)
    store, stage = storage_for(cfg), stage_root(out_root, cfg)
    shot_id = shot.shot_id or fallback_id(shot, cfg)
    folder, uri = stage / shot_id, Storage.join(str(out_root), shot_id)
    try:
        # 0. The rights gate, before any work (provenance.rights_required, or the campaign's rights.required).
        if cfg.provenance.rights_required:
            check_rights(shot.rights)

        # 1. Check inputs: fetch (s3:// inputs are cached locally), probe, hash, and derive the
        #    content-addressed shot id.
        with timed(timings, "probe"):
            local = fetch_inputs(shot, store, cfg)
            inputs, motion_probe = probe_inputs(shot, local, cfg)
        key = content_key(inputs, shot, cfg, spec)
        shot_id = shot.shot_id or key[:16]
        folder, uri = stage / shot_id, Storage.join(str(out_root), shot_id)
        manifest = finished(store, uri, key)
        if not force and manifest is not None:
            return ShotResult(shot_id, "reused", folder, reuse_verdict(manifest, cfg), uri=uri)
        claim(folder, store, uri)  # someone else's folder is refused, untouched
        # The prompt the shot is rendered with; not notify.urls (they hold tokens).
        config = {k: v for k, v in cfg.to_dict().items() if k != "notify"} | {"prompt": shot.prompt or cfg.prompt}
        record.update(shot_id=shot_id, content_key=key, inputs=inputs, rights=shot.rights, config=config)
        record.update(versions=_versions(spec), seeds=[cfg.seed])

        # 2. Character: image, mask, rest skeleton (before the long pose stage: its errors come early).
        from farm.character import load_character
        from farm.qa.measure import detector_sees

        given = {local.character: shot.character, local.skeleton: shot.skeleton, local.mask: shot.mask}
        with timed(timings, "character"), as_given(given):
            character, char_info = load_character(
                local.character, skeleton_path=local.skeleton, mask_path=local.mask, max_side=cfg.qa.max_side,
                sha256=inputs["character"]["sha256"],
            )
            record["character"] = {**char_info.to_dict(), "pose_detectable": detector_sees(character)}

        # 3. Pose of the performer, only the parts the shot uses (and, alongside where possible,
        #    the people in the video), from the motion library when an earlier shot extracted them.
        from farm.pose import library as motions

        options = shot_pose_options(cfg, spec)
        motion_sha, motion_key = inputs["motion"]["sha256"], None
        found = motions.lookup(store, library, motion_sha, options, cfg.pose.model, motion_probe.rotation) if library else None
        if found is not None:
            motion_key, entry = found
            driving, people_count, tracked = entry.poses, (lambda _poses: entry.people), entry.parts
        else:
            people_count = (people or _count_here)(local.motion)
            reporter.stage("pose", motion_probe.frame_count)
            with timed(timings, "pose"):
                extract = extract or partial(extract_in_process, chunk_frames=cfg.runtime.pose_chunk_frames)
                driving = extract(local.motion, motion_probe.frame_count, options, reporter)
            tracked = options.parts()
            if library:
                counted = people_count(driving)
                people_count = lambda _poses: counted  # noqa: E731 - counted once, for the library and preflight
                motion_key = motions.library_key(motion_sha, options, cfg.pose.model, motion_probe.rotation)
                motions.keep(store, library, motion_key, motions.MotionEntry(driving, counted, tracked), str(shot.motion))
        record["motion_library"] = {"key": motion_key, "reused": found is not None} if library else None
        # The parts the poses hold, and those mediapipe tracked: more when a library entry extracted
        # for a backend that reads more serves the shot.
        record["pose"] = {"parts": list(options.parts()), "tracked": list(tracked)}
        record["versions"]["pose_model"] = _pose_model(tracked)

        # 4. Preflight: the checks a careful user would make before spending compute.
        from farm.qa.preflight import run_preflight

        with timed(timings, "preflight"):
            preflight = run_preflight(local.motion, driving, character.joints, character.image.shape[0], people_count(driving),
                                      parts=options.parts())
        record["preflight"] = preflight.to_dict()
        give_memory_back()  # the pages of the pose and people-count graphs, before the render stage
        if cfg.qa.strict and preflight.warnings:
            raise FarmError(str(shot.motion), "preflight: " + "; ".join(preflight.warnings), "fix the inputs or set qa.strict=false")

        # 5. Retarget onto the character, at the output frame rate.
        from farm.pose.retarget import limb_layers, retarget

        fps = _output_fps(cfg, motion_probe, spec)
        index = _resample_index(len(driving), Fraction(motion_probe.fps_fraction), fps)
        with timed(timings, "retarget"):
            moved = retarget(
                driving.rig()[index], (motion_probe.width, motion_probe.height),
                character.joints, (character.image.shape[1], character.image.shape[0]),
                mode=cfg.match.mode, motion_weight=cfg.match.motion_weight, anchor=cfg.match.anchor, output_size=cfg.output.size,
                source=f"motion video {shot.motion}",
            )
            layers, behind = limb_layers(driving.body[index])
        record["retarget"] = {"anchor": moved.anchor, "driven_bones": int(moved.driven.sum()),
                              "root": moved.root}
        # Which person performs (motion.subject): the rule, how many people the first frame showed,
        # the one picked and on how many frames it was found; null for the most prominent person.
        record["subject"] = driving.subject
        record["provenance"] = _provenance(shot_id, cfg, moved.canvas)

        # 6. Window plan.
        windows, chains = _plan_windows(cfg, spec, len(index))
    except Exception as exc:  # noqa: BLE001 - one bad shot must never stop a campaign
        return fail_shot(shot, folder, record | {"shot_id": shot_id}, timings, exc, uri=uri, cfg=cfg)
    audio = local.motion if cfg.output.keep_audio and motion_probe.has_audio else None
    return ShotPlan(
        shot=shot, cfg=cfg, shot_id=shot_id, content_key=key, folder=folder, uri=uri, record=record, timings=timings,
        character=character, canvas=moved.canvas, targets=moved.targets, layers=layers, behind=behind,
        windows=windows, frame_count=len(index), fps=fps, audio=audio, driving=driving, index=index, motion=local.motion,
        license=local.license,
        detector_sees=record["character"]["pose_detectable"], chains=chains, condition_frames=spec.condition_frames,
    )


def _with_backend_defaults(cfg: FarmConfig, spec: BackendSpec) -> FarmConfig:
    """The config with what it leaves to the backend filled in (window.mode), so that the plan,
    the content key and the manifest all see the mode the shot is rendered in."""
    if cfg.window.mode is not None:
        return cfg
    return dataclasses.replace(cfg, window=dataclasses.replace(cfg.window, mode=spec.window_mode))


def _provenance(shot_id: str, cfg: FarmConfig, canvas: Canvas) -> dict:
    """The record's provenance so far: the watermark's code (the mapping code -> shot), or why the
    frames carry none, and the rights gate; the finish adds whether and by whom the video is signed."""
    reason = unmarked(cfg, canvas)
    watermark = {"code": None, "reason": reason} if reason else {"code": code_hex(watermark_code(shot_id)), "scheme": SCHEME}
    return {"watermark": watermark, "rights_required": cfg.provenance.rights_required}


def _plan_windows(cfg: FarmConfig, spec: BackendSpec, frames: int) -> tuple[list[Window], list[tuple[int, int]]]:
    """The shot's windows under the config's window settings and the backend's rules, and the
    chains they form (none for parallel windows). window.overlap is the overlap of parallel
    windows, or in chained mode that of the joins between chains (plan_chained_windows)."""
    length = cfg.window.length or spec.window_length
    overlap = cfg.window.overlap if cfg.window.overlap is not None else spec.window_overlap
    if cfg.window.mode != "chained":
        return plan_windows(frames, length, overlap, spec.frame_multiple), []
    if not spec.can_chain:
        raise FarmError("config window.mode", f"backend {spec.name} cannot continue a window from the one before it",
                        "use window.mode=parallel, or a backend that can chain")
    return plan_chained_windows(frames, length, spec.condition_frames, overlap, cfg.window.chains, spec.frame_multiple)


def _count_here(video: Path) -> Callable[[PoseSequence], tuple[int, str]]:
    from farm.qa.preflight import others_seen

    return others_seen(video).count


def local_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def extract_in_process(video: Path, frame_count: int, options: PoseOptions, reporter: Reporter, *,
                       chunk_frames: int | None = None, workers: int | None = None,
                       pool: Executor | None = None) -> PoseSequence:
    """The poses of `video`, extracted here: a video longer than chunk_frames in the frame ranges
    the Ray runtime would cut (farm.pose.extract.chunk_bounds), on a thread per CPU (mediapipe
    works without the GIL), so a laptop render uses every core for its longest stage. A chosen
    subject is followed from the first frame on, in one piece. workers: threads (None: this
    process's CPUs). pool: run the chunks there instead (a pool of `workers` threads that other
    work of the stage shares, so no more mediapipe graphs than threads are alive at once)."""
    from farm.pose.extract import chunk_bounds, concat_poses, extract_poses

    cpus = workers or local_cpus()
    bounds = [0, frame_count] if chunk_frames is None or options.subject is not None or cpus < 2 \
        else chunk_bounds(frame_count, chunk_frames, cpus)
    if len(bounds) == 2:
        return extract_poses(video, options=options, progress=progress_callback(reporter))
    lock = threading.Lock()

    def chunk(start: int, stop: int) -> PoseSequence:
        advance = progress_callback(reporter)

        def progress(n: int) -> None:
            with lock:  # the reporter hears from every thread
                advance(n)

        try:
            return extract_poses(video, start=start, stop=stop, options=options, progress=progress)
        finally:
            give_memory_back()  # the closed graph's pages, before the next chunk's graph

    with contextlib.nullcontext(pool) if pool is not None else ThreadPoolExecutor(cpus, thread_name_prefix="pose") as run:
        return concat_poses(list(run.map(chunk, bounds[:-1], bounds[1:])))


def _versions(spec: BackendSpec) -> dict:
    found = versions()
    found["backend"] = f"{spec.name}/{spec.version}"
    return found


def _pose_model(tracked: tuple[str, ...]) -> str:
    """The mediapipe graph that tracks these pose parts (farm.pose.extract._landmarker's choice)."""
    return "mediapipe holistic/pose_landmark_full" if len(tracked) > 1 else "mediapipe pose/pose_landmark_full"


def _output_fps(cfg: FarmConfig, probe: VideoProbe, spec: BackendSpec) -> Fraction:
    """output.fps, else the rate the backend's model was trained at (Wan-Animate: 30, as its
    preprocessing resamples every video), else the reference video's."""
    fps = cfg.output.fps if cfg.output.fps is not None else spec.native_fps
    if fps is None:
        return Fraction(probe.fps_fraction)
    return Fraction(fps).limit_denominator(1001)


def _resample_index(frames: int, src_fps: Fraction, out_fps: Fraction) -> np.ndarray:
    """Source frame shown at each output frame: the nearest in time (as upstream's
    get_frame_indices rounds; halves round up); the output lasts as long as the source."""
    if src_fps == out_fps:
        return np.arange(frames)
    total = max(1, round(frames * out_fps / src_fps))
    nearest = [math.floor(k * src_fps / out_fps + Fraction(1, 2)) for k in range(total)]
    return np.minimum(np.array(nearest, np.int64), frames - 1)
