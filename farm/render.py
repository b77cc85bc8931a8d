"""One shot, end to end on this machine: motion video + character image -> video.mp4 + record.

`render_shot` follows DESIGN §2 step by step. Every stage is a plain function of arrays; this module
only orders them, times them and writes the shot folder:

    <out>/<shot_id>/video.mp4  manifest.json  pose_preview.mp4  poses/driving.parquet  poses/target.parquet

Nothing partial is ever visible: the video is renamed into place only once complete, the manifest
is written last, and a failed shot leaves a manifest with `status: failed` and no video.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import shutil
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

from farm.backends.base import Backend, BackendSpec, Canvas, Character, WindowRequest
from farm.config import FarmConfig
from farm.errors import FarmError
from farm.manifest import SCHEMA_VERSION, versions, write_json_atomic
from farm.media.probe import VideoProbe, probe_video, sha256_file
from farm.pose.extract import PoseOptions, PoseSequence
from farm.stitch import overlap_statistics
from farm.storage import Storage, StorageOptions
from farm.storage.local import write_atomically
from farm.windows import Segment, Window, overlap_overhead, plan_chains, plan_segments, plan_windows

SHOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VIDEO = "video.mp4"
MANIFEST = "manifest.json"
PREVIEW = "pose_preview.mp4"
WINDOWS = "windows"
SEGMENTS = "segments"
QA_TABLE = "qa.parquet"
REPORT = "report.html"
QA_SUFFIX = ".qa.npz"  # next to each segment: what QA measured on its frames
WORK = (WINDOWS, SEGMENTS)  # working files of a shot: kept until its manifest is committed, never published


class Reporter(Protocol):
    def stage(self, name: str, total: int | None = None) -> None: ...
    def advance(self, n: int = 1) -> None: ...


class _Silent:
    def stage(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


@dataclass
class Shot:
    """What to render. Inputs are local paths, file:// or s3:// URIs (read through farm.storage);
    `shot_id` is derived from the content when not given."""

    motion: Path | str
    character: Path | str
    skeleton: Path | str | None = None
    mask: Path | str | None = None
    prompt: str = ""
    shot_id: str | None = None
    rights: dict = field(default_factory=dict)


@dataclass
class ShotResult:
    """folder: the local folder the shot was made in (the output itself for local outputs, a
    staging copy for s3:// outputs); uri: the shot's folder in the output store."""

    shot_id: str
    status: str  # "succeeded" | "failed" | "reused"
    folder: Path
    manifest: dict
    error: str | None = None
    uri: str = ""

    @property
    def video(self) -> Path | None:
        """The local video file, when there is one (a reused s3:// shot has none locally)."""
        path = self.folder / VIDEO
        return path if self.status != "failed" and path.exists() else None

    @property
    def video_uri(self) -> str | None:
        return None if self.status == "failed" else Storage.join(self.uri or str(self.folder), VIDEO)


def storage_for(cfg: FarmConfig) -> Storage:
    """The store for a config; one per distinct storage config in a process (its S3 client is reused)."""
    s = cfg.storage
    return _storage(StorageOptions(
        endpoint_url=s.endpoint_url, region=s.region, max_attempts=s.max_attempts,
        multipart_threshold_mb=s.multipart_threshold_mb, multipart_chunk_mb=s.multipart_chunk_mb, roots=tuple(s.roots),
    ))


@functools.lru_cache(maxsize=8)
def _storage(options: StorageOptions) -> Storage:
    return Storage(options)


def cache_root(cfg: FarmConfig | None) -> Path:
    configured = cfg.storage.cache_dir if cfg is not None else None
    return Path(configured or Path.home() / ".cache" / "motion-farm")


def stage_root(out_root: Path | str, cfg: FarmConfig | None) -> Path:
    """Where a shot's files are made: the output folder itself when it is local; for an s3:// output,
    a local staging folder whose finished files are then uploaded (manifest last)."""
    location = str(out_root)
    if not Storage.is_remote(location):
        return Path(Storage().local_path(location))
    return cache_root(cfg) / "stage" / hashlib.sha256(location.encode()).hexdigest()[:16]


def backend_class(cfg: FarmConfig) -> type:
    """The backend class a config names; its `spec` is known without loading any model."""
    if cfg.backend.name == "puppet":
        from farm.backends.puppet import PuppetBackend

        return PuppetBackend
    if cfg.backend.name == "wan_animate":
        from farm.backends.wan_animate import WanAnimateBackend

        return WanAnimateBackend
    raise FarmError("config backend.name", f"unknown backend {cfg.backend.name!r}", "use puppet or wan_animate")


def backend_spec(cfg: FarmConfig) -> BackendSpec:
    """What the configured backend needs (its GPUs, window rule), without loading its model."""
    cls = backend_class(cfg)
    return cls.spec_for(**_backend_options(cfg)) if hasattr(cls, "spec_for") else cls.spec


def make_backend(cfg: FarmConfig) -> Backend:
    return backend_class(cfg)(**_backend_options(cfg))


def _backend_options(cfg: FarmConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg.backend).items() if k != "name"}


@dataclass
class ShotPlan:
    """A shot ready to render: everything the window workers and the final stitch need.

    targets: (T, 15, 3) retargeted joints on the canvas; layers: (T, 4) limb order; behind: (T,)
    limbs behind the torso; index: (T,) source frame of each output frame; record: the manifest so
    far; timings: seconds per stage so far.
    """

    shot: Shot
    cfg: FarmConfig
    shot_id: str
    content_key: str
    folder: Path
    uri: str
    record: dict
    timings: dict
    character: Character
    canvas: Canvas
    targets: np.ndarray
    layers: np.ndarray
    behind: np.ndarray
    windows: list[Window]
    fps: Fraction
    audio: Path | None
    driving: PoseSequence
    index: np.ndarray
    motion: Path  # the motion video, local to the node that planned the shot
    detector_sees: bool = True  # mediapipe finds the character's pose in its image: QA re-detects it on the output

    def request(self, window: Window) -> WindowRequest:
        return WindowRequest(
            shot_id=self.shot_id, start=window.start, end=window.end,
            targets=self.targets[window.start : window.end], layers=self.layers[window.start : window.end],
            prompt=self.shot.prompt or self.cfg.prompt, seed=self.cfg.seed,
            options={"limbs_behind_torso": self.behind[window.start : window.end]},
        )

    def window_file(self, window: Window) -> Path:
        """Checkpoint of one rendered window, named by its content: a rerun after a crash finds it."""
        key = hashlib.sha256(f"{self.content_key}:{window.start}:{window.end}:{window.render_length}".encode()).hexdigest()[:16]
        return self.folder / WINDOWS / f"{window.index:05d}-{key}.npz"

    def window_uri(self, window: Window) -> str:
        return Storage.join(self.uri, WINDOWS, self.window_file(window).name)

    def previous_window(self, window: Window) -> Window | None:
        """The window this one continues from (window.mode=chained), None when it starts a chain or
        windows are independent."""
        if self.cfg.window.mode != "chained":
            return None
        heads = {first for first, _ in plan_chains(self.windows, self.cfg.window.chains)}
        return None if window.index in heads else self.windows[window.index - 1]

    @property
    def segments(self) -> list[Segment]:
        """The runs of windows that are stitched and encoded on their own, then joined."""
        return plan_segments(self.windows, len(self.targets), self.cfg.output.segment_frames)

    def segment_file(self, segment: Segment, suffix: str = ".mp4") -> Path:
        """The segment's video, or with suffix QA_SUFFIX what QA measured on it."""
        return self.folder / SEGMENTS / f"{segment.index:04d}{suffix}"

    def segment_uri(self, segment: Segment, suffix: str = ".mp4") -> str:
        return Storage.join(self.uri, SEGMENTS, self.segment_file(segment, suffix).name)

    @property
    def remote(self) -> bool:
        return Storage.is_remote(self.uri)

    def has_window(self, window: Window) -> bool:
        """A checkpoint exists (for s3:// outputs: in the store, wherever it was rendered)."""
        if self.remote:  # only an uploaded checkpoint counts: a local one may have failed to upload
            return storage_for(self.cfg).exists(self.window_uri(window))
        return self.window_file(window).exists()


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
    from an interrupted run are reused."""
    reporter = reporter or _Silent()
    try:
        backend = backend or make_backend(cfg)
    except FarmError as exc:
        return record_failure(shot, cfg, out_root, exc)
    planned = plan_shot(shot, cfg, out_root, backend.spec, reporter=reporter, force=force)
    if isinstance(planned, ShotResult):
        return planned
    try:
        with _timed(planned.timings, "prepare"):
            backend.prepare(planned.character, planned.canvas)
        reporter.stage("render", len(planned.targets))
        logs = []
        for window in planned.windows:
            logs.append(render_window(backend, planned, window))
            reporter.advance(window.length)
    except Exception as exc:  # noqa: BLE001 - recorded in the manifest
        return fail_shot(planned.shot, planned.folder, planned.record, planned.timings, exc, uri=planned.uri, cfg=cfg)
    return finish_shot(planned, logs)


def plan_shot(
    shot: Shot,
    cfg: FarmConfig,
    out_root: Path | str,
    spec: BackendSpec,
    *,
    reporter: Reporter | None = None,
    force: bool = False,
    extract: Callable[[Path, int, PoseOptions, Reporter], PoseSequence] | None = None,
    people: Callable[[Path], Callable[[], tuple[int, str]]] | None = None,
) -> ShotPlan | ShotResult:
    """Steps 1-6 of a shot: inputs, character, pose, preflight, retarget, window plan. Returns the
    plan, or the final result when the shot is already finished (reused) or failed.

    extract(video, frame_count, options, reporter): how the performer's poses are extracted; by
    default in this process, front to back (the Ray runtime passes one that shards long videos).
    people(video): starts counting the people in the video and returns how to wait for the count
    (the Ray runtime counts on another worker while the poses are extracted).
    """
    reporter = reporter or _Silent()
    record: dict = {"schema_version": SCHEMA_VERSION, "status": "running", "prompt": shot.prompt or cfg.prompt}
    timings: dict[str, float] = {}
    check_shot_id(shot.shot_id)
    store, stage = storage_for(cfg), stage_root(out_root, cfg)
    shot_id = shot.shot_id or _fallback_id(shot, cfg)
    folder, uri = stage / shot_id, Storage.join(str(out_root), shot_id)
    try:
        # 1. Check inputs: fetch (s3:// inputs are cached locally), probe, hash, and derive the
        #    content-addressed shot id.
        with _timed(timings, "probe"):
            local = _fetch_inputs(shot, store, cfg)
            inputs, motion_probe = _probe_inputs(shot, local, cfg)
        content_key = _content_key(inputs, shot, cfg, spec)
        shot_id = shot.shot_id or content_key[:16]
        folder, uri = stage / shot_id, Storage.join(str(out_root), shot_id)
        manifest = _finished(store, uri, content_key)
        if not force and manifest is not None:
            return ShotResult(shot_id, "reused", folder, reuse_verdict(manifest, cfg), uri=uri)
        _reset(folder, store, uri)
        record.update(shot_id=shot_id, content_key=content_key, inputs=inputs, rights=shot.rights, config=cfg.to_dict())
        record.update(versions=_versions(spec), seeds=[cfg.seed])

        # 2. Character: image, mask, rest skeleton (before the long pose stage: its errors come early).
        from farm.character import load_character

        with _timed(timings, "character"):
            character, char_info = load_character(
                local.character, skeleton_path=local.skeleton, mask_path=local.mask, max_side=cfg.qa.max_side,
                sha256=inputs["character"]["sha256"],
            )
        from farm.qa.measure import detector_sees

        with _timed(timings, "character"):
            record["character"] = {**char_info.to_dict(), "pose_detectable": detector_sees(character)}

        # 3. Pose of the performer (and, alongside where possible, the people in the video).
        people_count = (people or _count_here)(local.motion)
        reporter.stage("pose", motion_probe.frame_count)
        with _timed(timings, "pose"):
            driving = (extract or extract_in_process)(local.motion, motion_probe.frame_count, pose_options(cfg), reporter)

        # 4. Preflight: the checks a careful user would make before spending compute.
        from farm.qa.preflight import run_preflight

        with _timed(timings, "preflight"):
            preflight = run_preflight(local.motion, driving, character.joints, character.image.shape[0], people_count())
        record["preflight"] = preflight.to_dict()
        if cfg.qa.strict and preflight.warnings:
            raise FarmError(str(shot.motion), "preflight: " + "; ".join(preflight.warnings), "fix the inputs or set qa.strict=false")

        # 5. Retarget onto the character, at the output frame rate.
        from farm.pose.retarget import limb_layers, retarget

        fps = _output_fps(cfg, motion_probe)
        index = _resample_index(len(driving), Fraction(motion_probe.fps_fraction), fps)
        with _timed(timings, "retarget"):
            moved = retarget(
                driving.rig()[index],
                (motion_probe.width, motion_probe.height),
                character.joints,
                (character.image.shape[1], character.image.shape[0]),
                mode=cfg.match.mode,
                motion_weight=cfg.match.motion_weight,
                anchor=cfg.match.anchor,
                output_size=cfg.output.size,
            )
            layers, behind = limb_layers(driving.body[index])
        record["retarget"] = {"anchor": moved.anchor, "driven_bones": int(moved.driven.sum())}

        # 6. Window plan.
        chained = cfg.window.mode == "chained"
        default_overlap = spec.condition_frames if chained else spec.window_overlap
        overlap = cfg.window.overlap if cfg.window.overlap is not None else default_overlap
        if cfg.window.mode == "chained" and not spec.can_chain:
            raise FarmError("config window.mode", f"backend {spec.name} cannot continue a window from the one before it",
                            "use window.mode=parallel, or a backend that can chain")
        if cfg.window.mode == "chained" and overlap != spec.condition_frames:
            raise FarmError("config window.overlap", f"is {overlap}; a chained window starts on the {spec.condition_frames} "
                            "frame(s) it continues from, so it must overlap the one before by as many",
                            f"set window.overlap={spec.condition_frames}")
        windows = plan_windows(
            len(index),
            cfg.window.length or spec.window_length,
            overlap,
            spec.frame_multiple,
        )
    except Exception as exc:  # noqa: BLE001 - one bad shot must never stop a campaign
        return fail_shot(shot, folder, record | {"shot_id": shot_id}, timings, exc, uri=uri, cfg=cfg)
    audio = local.motion if cfg.output.keep_audio and motion_probe.has_audio else None
    return ShotPlan(
        shot=shot, cfg=cfg, shot_id=shot_id, content_key=content_key, folder=folder, uri=uri, record=record, timings=timings,
        character=character, canvas=moved.canvas, targets=moved.targets, layers=layers, behind=behind,
        windows=windows, fps=fps, audio=audio, driving=driving, index=index, motion=local.motion,
        detector_sees=record["character"]["pose_detectable"],
    )


def _count_here(video: Path) -> Callable[[], tuple[int, str]]:
    from farm.qa.preflight import count_people

    return lambda: count_people(video)


def extract_in_process(video: Path, frame_count: int, options: PoseOptions, reporter: Reporter) -> PoseSequence:
    from farm.pose.extract import extract_poses

    return extract_poses(video, options=options, progress=progress_callback(reporter))


def render_window(backend: Backend, plan: ShotPlan, window: Window, *, worker: str = "local") -> dict:
    """Step 7 for one window: render it (unless its checkpoint exists) and write the checkpoint.
    The backend must have been prepared for this plan. Returns the window's log entry."""
    path = plan.window_file(window)
    if plan.has_window(window):
        return {**window.to_dict(), "reused": True}
    started = time.perf_counter()
    request = plan.request(window)
    before = plan.previous_window(window)
    if before is not None:  # chained: continue from the window before, on the frames where this one starts
        at = window.start - before.start  # (the last window, shifted back to end the shot, overlaps more)
        request.previous = _window_frames(plan, before)[at : at + max(1, backend.spec.condition_frames)]
    if backend.spec.needs_reference:
        request.reference, request.driving = _reference_for(plan, window)
    result = backend.render_window(request)
    error = None
    if result.drawn_joints is not None:
        error = float(np.linalg.norm(result.drawn_joints - request.targets[..., :2], axis=-1).max())
    seconds = time.perf_counter() - started
    frames = result.frames[: window.length]
    stored = {"frames": frames}
    if result.drawn_joints is not None:  # where the backend drew the rig: QA measures it when the detector cannot
        stored["joints"] = result.drawn_joints[: window.length].astype(np.float32)
    if plan.cfg.window.colour == "lab":  # what the stitch fits colours with, measured here in parallel
        stored["lab"] = overlap_statistics(plan.windows, window.index, frames)
    write_atomically(path, lambda out: np.savez(out, **stored), str(path))
    if plan.remote:  # other nodes, and a rerun on another machine, find it in the store
        storage_for(plan.cfg).put_file(path, plan.window_uri(window))
    log = {
        **window.to_dict(), "reused": False, "worker": worker,
        "seconds": round(seconds, 3), "rig_error_px_max": None if error is None else round(error, 3),
    }
    if "lab" in stored:
        log["lab"] = stored["lab"].tolist()
    if hasattr(backend, "describe"):  # the model's id, revision or content hash, dtype, device
        log["model"] = backend.describe()
    return log


def encode_segment(plan: ShotPlan, segment: Segment, window_logs: list[dict], *, worker: str = "local") -> dict:
    """Step 8-9 for one segment: stitch its windows (colour-fitted along the whole chain, see
    farm.stitch.chain_fits) into frames [segment.start, segment.end) and encode them, without audio,
    to the segment's file; uploaded for s3:// outputs. Returns the segment's log entry.

    x264 runs on one thread: its output depends on its thread count, and a shot's video must not
    depend on the machine (segments of a long video encode side by side on the farm instead)."""
    from farm.media.encode import VideoWriter
    from farm.qa.measure import Appearance, FrameMeter
    from farm.stitch import Stitcher

    started = time.perf_counter()
    cfg, windows = plan.cfg, plan.windows
    fits = _colour_fits(plan, window_logs[: segment.stop]) if cfg.window.colour == "lab" else [None] * segment.stop
    stitcher = Stitcher(len(plan.targets), cfg.window.blend, cfg.window.colour, start=segment.start)
    if segment.first > 0:
        before = windows[segment.first - 1]
        stitcher.prime(before, _window_frames(plan, before), fits[before.index])
    path = plan.segment_file(segment)
    path.parent.mkdir(parents=True, exist_ok=True)
    meter = FrameMeter(Appearance.of(plan.character), plan.targets[segment.start : segment.end], detect_pose=plan.detector_sees)
    with VideoWriter(path, fps=plan.fps, width=plan.canvas.width, height=plan.canvas.height,
                     crf=cfg.output.crf, preset=cfg.output.preset, threads=1) as writer, meter:
        for w in range(segment.first, segment.stop):
            next_start = windows[w + 1].start if w + 1 < len(windows) else None
            for frame in stitcher.add(windows[w], _window_frames(plan, windows[w]), next_start, fits[w]):
                writer.write(frame)
                meter.add(frame)  # QA measures the frames as they are encoded, segments side by side
        stitcher.finish(segment.end)
    measured = plan.segment_file(segment, QA_SUFFIX)
    seams = np.array(stitcher.seams, np.float64).reshape(-1, 2)  # (window, seam score) of the joins made here
    write_atomically(measured, lambda out: np.savez(out, **meter.result(), seams=seams), str(measured))
    if plan.remote:
        storage_for(cfg).put_file(path, plan.segment_uri(segment))
        storage_for(cfg).put_file(measured, plan.segment_uri(segment, QA_SUFFIX))
    return {"index": segment.index, "start": segment.start, "end": segment.end, "worker": worker,
            "seconds": round(time.perf_counter() - started, 3), "measure_seconds": round(meter.seconds, 3)}


def finish_shot(plan: ShotPlan, window_logs: list[dict], segment_logs: list[dict] | None = None) -> ShotResult:
    """Steps 8-11: join the encoded segments (encoding them here first when `segment_logs` is None)
    with the reference's audio into exactly T frames, write the pose artifacts, then the manifest;
    the checkpoints and segments are removed on success."""
    from farm.media.encode import join_segments
    from farm.pose.store import write_parquet, write_rig_parquet

    cfg, folder, timings, record = plan.cfg, plan.folder, plan.timings, plan.record
    timings["generate"] = sum(w.get("seconds", 0.0) for w in window_logs)  # inside the backend, on whichever worker
    _discard_outputs(folder)  # this node may hold files of an earlier run of the shot
    try:
        # 8-9. Stitch and encode segment by segment (streaming: one window and an overlap tail in
        # memory), then join the segments without re-encoding.
        if segment_logs is None:
            segment_logs = [encode_segment(plan, segment, window_logs) for segment in plan.segments]
        # On whichever worker, like "generate"; QA's measuring runs inside the segments' encoding.
        timings["measure"] = sum(s.get("measure_seconds", 0.0) for s in segment_logs)
        timings["encode"] = sum(s["seconds"] for s in segment_logs) - timings["measure"]
        with _timed(timings, "join"):
            parts = [_local_segment(plan, segment) for segment in plan.segments]
            frames = join_segments(parts, folder / VIDEO, fps=plan.fps, audio_from=plan.audio)
            if frames != len(plan.targets):
                raise RuntimeError(f"the joined video has {frames} frames, expected {len(plan.targets)}")
        record["windows"] = [{k: v for k, v in log.items() if k not in ("lab", "model")} for log in window_logs]
        models = [log["model"] for log in window_logs if "model" in log]
        if models:
            record["model"] = models[0]
        record["segments"] = segment_logs

        # 10. Pose artifacts: parquet tables and the preview video.
        with _timed(timings, "artifacts"):
            (folder / "poses").mkdir(exist_ok=True)
            write_parquet(plan.driving, folder / "poses" / "driving.parquet")
            write_rig_parquet(
                plan.targets, folder / "poses" / "target.parquet", fps=float(plan.fps),
                width=plan.canvas.width, height=plan.canvas.height,
            )
            if cfg.output.pose_preview:
                from farm.pose.preview import write_pose_preview

                write_pose_preview(
                    folder / PREVIEW, plan.driving, plan.fps, index=plan.index, targets=plan.targets,
                    canvas_size=(plan.canvas.width, plan.canvas.height),
                )
            if cfg.output.openpose_json:
                from farm.pose.openpose import write_openpose_json

                write_openpose_json(plan.driving, folder / "poses" / "openpose")

        # 10b. Quality: what the segments measured, against the target pose; thresholds.
        with _timed(timings, "qa"):
            from farm.qa.measure import verdict, write_quality_table

            quality = _quality(plan)
            quality.frames["source_frame"] = plan.index
            write_quality_table(quality, folder / QA_TABLE)

        errors = [w["rig_error_px_max"] for w in window_logs if w.get("rig_error_px_max") is not None]
        record["metrics"] = {
            "frames": len(plan.targets),
            "fps": float(plan.fps),
            "width": plan.canvas.width,
            "height": plan.canvas.height,
            "overlap_overhead": round(overlap_overhead(plan.windows, len(plan.targets)), 4),
            "rig_error_px_max": max(errors) if errors else None,
            "windows_rendered": sum(1 for w in window_logs if not w.get("reused")),
            "windows_reused": sum(1 for w in window_logs if w.get("reused")),
            **quality.summary,
            "windows": quality.windows,
        }
        reasons = verdict(record["metrics"], quality.windows, cfg.qa)
        record["qa"] = {"needs_rerender": bool(reasons), "reasons": reasons}
        record["artifacts"] = _artifacts(folder)
        record.update(status="succeeded", error=None)
        record["timings"] = {k: round(v, 3) for k, v in timings.items()}  # the report shows them
        with _timed(timings, "report"):
            _write_report(plan, record)
        record["timings"] = {k: round(v, 3) for k, v in timings.items()}
        result = _commit(record, folder, plan.uri, storage_for(cfg) if plan.remote else None)
    except Exception as exc:  # noqa: BLE001 - recorded in the manifest
        return fail_shot(plan.shot, folder, record, timings, exc, uri=plan.uri, cfg=cfg)
    # Checkpoints and segments go only once the manifest is committed; failing to remove them harms nothing.
    for work in WORK:
        shutil.rmtree(folder / work, ignore_errors=True)
        if plan.remote:
            try:
                storage_for(cfg).delete_prefix(Storage.join(plan.uri, work))
            except FarmError:
                pass
    return result


def _write_report(plan: ShotPlan, record: dict) -> None:
    """The shot's report.html (and thumb.jpg, for the campaign page). A report that cannot be made
    costs the shot nothing: the reason is recorded and `farm report` can try again."""
    from farm.report import ShotSources, write_shot_report

    try:
        write_shot_report(ShotSources(plan.folder, record, motion=_local_motion(plan), character=plan.character.image))
        record["report"], record["report_error"] = REPORT, None
    except Exception as exc:  # noqa: BLE001 - a view of the shot, not the shot
        record["report"], record["report_error"] = None, f"{type(exc).__name__}: {exc}"


def fail_shot(
    shot: Shot, folder: Path, record: dict, timings: dict, exc: BaseException, *, uri: str = "", cfg: FarmConfig | None = None
) -> ShotResult:
    """Record a failed shot: the error in the manifest, no video or other artifact left (window
    checkpoints stay, so a rerun after a transient fault does not redo them)."""
    shot_id = record.get("shot_id") or folder.name
    message = str(exc.for_shot(shot_id)) if isinstance(exc, FarmError) else f"internal error: {type(exc).__name__}: {exc}"
    record.update(shot_id=shot_id, status="failed", error={"type": type(exc).__name__, "message": message})
    if not isinstance(exc, FarmError):
        record["error"]["traceback"] = "".join(traceback.format_exception(exc, limit=8))
    record["timings"] = {k: round(v, 3) for k, v in timings.items()}
    _discard_outputs(folder, keep=(WINDOWS,))  # segments are made again from the checkpoints
    remote = bool(cfg is not None and uri and Storage.is_remote(uri))
    if remote:
        _clear_remote(storage_for(cfg), uri)
    return _commit(record, folder, uri or str(folder), storage_for(cfg) if remote else None)


def record_failure(shot: Shot, cfg: FarmConfig | None, out_root: Path | str, error: FarmError) -> ShotResult:
    """A shot that failed before it could start (e.g. its config overrides are wrong): still one
    manifest with `status: failed` and the reason, like any other failed shot."""
    check_shot_id(shot.shot_id)
    shot_id = shot.shot_id or _fallback_id(shot, cfg)
    record = {
        "schema_version": SCHEMA_VERSION, "shot_id": shot_id, "status": "failed", "prompt": shot.prompt,
        "rights": shot.rights, "error": {"type": type(error).__name__, "message": str(error.for_shot(shot_id))},
    }
    uri = Storage.join(str(out_root), shot_id)
    store = storage_for(cfg) if cfg is not None else Storage()
    return _commit(record, stage_root(out_root, cfg) / shot_id, uri, store if Storage.is_remote(uri) else None)


def check_shot_id(shot_id: str | None) -> None:
    """Shot ids name folders: letters, digits, '-', '_', '.'; never a path."""
    if shot_id is not None and not SHOT_ID.match(shot_id):
        raise FarmError(
            f"shot id {shot_id!r}", "is not a valid id", "use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )


def _commit(record: dict, folder: Path, uri: str = "", store: Storage | None = None) -> ShotResult:
    """Write the manifest, the shot's commit marker. With a store (s3:// output), every other file
    of the shot folder is uploaded first and the manifest last, so a reader never finds a manifest
    whose files are not there yet."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / MANIFEST, record)
    if store is not None:
        made = (p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
        for path in sorted(p for p in made if p.relative_to(folder).parts[0] not in WORK):
            store.put_file(path, Storage.join(uri, *path.relative_to(folder).parts))
        store.put_file(folder / MANIFEST, Storage.join(uri, MANIFEST))
    error = record["error"]["message"] if record["error"] else None
    return ShotResult(record["shot_id"], record["status"], folder, record, error, uri=uri or str(folder))


@dataclass
class _LocalInputs:
    motion: Path
    character: Path
    skeleton: Path | None
    mask: Path | None


def _fetch_inputs(shot: Shot, store: Storage, cfg: FarmConfig) -> _LocalInputs:
    """The shot's inputs as local files: local paths are checked against storage.roots, s3://
    objects are downloaded once into the cache."""
    cache = cache_root(cfg) / "inputs"

    def fetch(value, name: str) -> Path | None:
        if value is None:
            return None
        try:
            return store.fetch(str(value), cache)
        except FarmError as exc:
            if exc.problem == "file not found" and name in ("skeleton", "mask"):
                raise FarmError(exc.subject, f"{name} file not found", f"check the --character-{name} path") from None
            raise

    return _LocalInputs(
        motion=fetch(shot.motion, "motion"), character=fetch(shot.character, "character"),
        skeleton=fetch(shot.skeleton, "skeleton"), mask=fetch(shot.mask, "mask"),
    )


def _probe_inputs(shot: Shot, local: _LocalInputs, cfg: FarmConfig) -> tuple[dict, VideoProbe]:
    from farm.media.probe import probe_image

    motion = probe_video(local.motion, max_side=cfg.qa.max_side, max_duration_s=cfg.qa.max_video_seconds)
    image = probe_image(local.character, max_side=cfg.qa.max_side)
    inputs = {
        "motion": _input_record(local.motion, motion, shot.motion),
        "character": _input_record(local.character, image, shot.character),
    }
    for name in ("skeleton", "mask"):
        if getattr(local, name) is not None:
            inputs[name] = _input_record(getattr(local, name), None, getattr(shot, name))
    return inputs, motion


def _input_record(path: Path, probe, given) -> dict:
    """given: the input as the user named it (an s3:// URI is recorded as such)."""
    path = Path(path)
    return {
        "uri": str(given) if Storage.is_remote(str(given)) else path.resolve().as_uri(),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "probe": probe.to_dict() if probe is not None else None,
    }


def _content_key(inputs: dict, shot: Shot, cfg: FarmConfig, spec: BackendSpec) -> str:
    """Hash of everything that makes the shot: input bytes, prompt, rights, config, backend. Not the
    config of where it is stored, how the cluster runs or what QA checks (qa.*, storage.*,
    runtime.*): a new threshold or endpoint must not re-render finished shots (a reused shot's
    verdict is worked out again under the thresholds of the run, see reuse_verdict)."""
    config = {k: v for k, v in cfg.to_dict().items() if k not in ("qa", "storage", "runtime")}
    key = {
        "inputs": {name: item["sha256"] for name, item in inputs.items()},
        "prompt": shot.prompt,
        "rights": shot.rights,
        "config": config,
        "backend": [spec.name, spec.version],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def reuse_verdict(manifest: dict, cfg: FarmConfig) -> dict:
    """A finished shot's record with its QA verdict worked out again under this run's thresholds
    (the manifest on disk keeps the verdict of the render); unchanged when it has no metrics."""
    from farm.qa.measure import verdict

    metrics = manifest.get("metrics") or {}
    if "windows" not in metrics or "qa" not in manifest:
        return manifest
    reasons = verdict(metrics, metrics["windows"], cfg.qa)
    return {**manifest, "qa": {"needs_rerender": bool(reasons), "reasons": reasons}}


def _fallback_id(shot: Shot, cfg: FarmConfig | None) -> str:
    """Id for a shot whose inputs cannot even be hashed (missing file): from names and config."""
    key = json.dumps([str(shot.motion), str(shot.character), cfg.to_dict() if cfg else None], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _finished(store: Storage, uri: str, content_key: str) -> dict | None:
    """The manifest of a finished render of exactly this content in the store, else None (a
    named shot whose inputs or config changed is rendered again)."""
    try:
        if not store.exists(Storage.join(uri, MANIFEST)):
            return None
        manifest = json.loads(store.get_bytes(Storage.join(uri, MANIFEST)))
    except (FarmError, ValueError):
        return None
    done = manifest.get("status") == "succeeded" and manifest.get("content_key") == content_key
    return manifest if done and store.exists(Storage.join(uri, VIDEO)) else None


def _reset(folder: Path, store: Storage, uri: str) -> None:
    """Clear what an earlier, different or unfinished render left, except window checkpoints,
    here and (for s3:// outputs) in the store, so no stale video sits next to a new manifest."""
    _discard_outputs(folder)
    (folder / MANIFEST).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    if Storage.is_remote(uri):
        _clear_remote(store, uri)


def _clear_remote(store: Storage, uri: str) -> None:
    """Remove a shot's files from the store, except its window checkpoints (segments go: they are
    made again from the checkpoints)."""
    keep = Storage.join(uri, WINDOWS) + "/"
    for found in store.list(uri):
        if not found.startswith(keep):
            store.delete(found)


def _local_window(plan: ShotPlan, window: Window) -> Path:
    """The window's checkpoint on this machine, downloaded from the store if another node made it."""
    return _on_this_node(plan, plan.window_file(window), plan.window_uri(window))


def _on_this_node(plan: ShotPlan, path: Path, uri: str) -> Path:
    """A working file of the shot (checkpoint, segment) here, fetched from the store when another node made it."""
    if path.exists() or not plan.remote:
        return path
    return storage_for(plan.cfg).fetch(uri, path.parent / "fetched")


def _reference_for(plan: ShotPlan, window: Window) -> tuple[np.ndarray, PoseSequence]:
    """The reference video's frames behind the window's output frames, and the driving pose on them."""
    from farm.media.decode import iter_frames

    index = plan.index[window.start : window.end]
    first, last = int(index.min()), int(index.max())
    decoded = list(iter_frames(_local_motion(plan), first, last + 1))
    frames = np.stack([decoded[i - first] for i in index])
    return frames, _driving_at(plan, index)


def _driving_at(plan: ShotPlan, index: np.ndarray) -> PoseSequence:
    """The driving pose on the source frames `index` (one per output frame)."""
    at = index - plan.driving.start
    d = plan.driving
    return PoseSequence(body=d.body[at], left_hand=d.left_hand[at], right_hand=d.right_hand[at], face=d.face[at],
                        fps=d.fps, width=d.width, height=d.height, start=int(index.min()))


def _quality(plan: ShotPlan):
    """The shot's quality (farm.qa.measure.Quality) from what its segments measured."""
    from farm.qa.measure import coco17_target, shot_quality

    parts = []
    for segment in plan.segments:
        with np.load(_local_segment(plan, segment, QA_SUFFIX)) as stored:
            parts.append({key: stored[key] for key in stored.files})
    drawn = None
    if not plan.detector_sees:  # only then are the drawn joints measured (read from the checkpoints)
        drawn = np.zeros((len(plan.targets), 15, 2), np.float32)
        for window in plan.windows:
            with np.load(_local_window(plan, window)) as stored:
                if "joints" not in stored.files:
                    drawn = None
                    break
                drawn[window.start : window.end] = stored["joints"]
    target = coco17_target(plan.targets, _driving_at(plan, plan.index))
    return shot_quality(parts, plan.windows, target, drawn=drawn, detector_sees_character=plan.detector_sees)


def _local_motion(plan: ShotPlan) -> Path:
    """The motion video on this machine (fetched into the input cache on another node)."""
    if plan.motion.exists():
        return plan.motion
    return storage_for(plan.cfg).fetch(str(plan.shot.motion), cache_root(plan.cfg) / "inputs")


def _window_frames(plan: ShotPlan, window: Window) -> np.ndarray:
    with np.load(_local_window(plan, window)) as stored:
        return stored["frames"]


def _local_segment(plan: ShotPlan, segment: Segment, suffix: str = ".mp4") -> Path:
    """The segment's file on this machine, downloaded from the store if another node made it."""
    return _on_this_node(plan, plan.segment_file(segment, suffix), plan.segment_uri(segment, suffix))


def _colour_fits(plan: ShotPlan, window_logs: list[dict]) -> list:
    """The colour fit of each window in `window_logs` (the first ones of the shot, in order), from
    the overlap statistics its worker measured; read back from the checkpoint for a window reused
    from an earlier run, or measured here for a checkpoint that predates them."""
    from farm.stitch import chain_fits, overlap_statistics

    statistics = []
    for window, log in zip(plan.windows, window_logs):
        if "lab" in log:
            statistics.append(np.array(log["lab"], dtype=np.float64))
            continue
        with np.load(_local_window(plan, window)) as stored:
            statistics.append(stored["lab"] if "lab" in stored.files else overlap_statistics(plan.windows, window.index, stored["frames"]))
    return chain_fits(statistics)


def _discard_outputs(folder: Path, keep: tuple[str, ...] = WORK) -> None:
    """Remove what an earlier run of the shot left here, except the manifest and `keep`."""
    if folder.exists():
        for child in folder.iterdir():
            if child.name not in (MANIFEST, *keep):
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def _artifacts(folder: Path) -> list[dict]:
    """Every file the shot keeps, with its hash; window checkpoints are not kept (removed once committed)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and p.relative_to(folder).parts[0] not in WORK):
        found.append({"name": path.name, "path": str(path.relative_to(folder)), "sha256": sha256_file(path), "bytes": path.stat().st_size})
    return found


def _versions(spec: BackendSpec) -> dict:
    found = versions()
    found["backend"] = f"{spec.name}/{spec.version}"
    found["pose_model"] = "mediapipe holistic/pose_landmark_full"
    return found


def pose_options(cfg: FarmConfig) -> PoseOptions:
    """The pose config as the options extract_poses takes (the config adds only the model name)."""
    return PoseOptions(**{f.name: getattr(cfg.pose, f.name) for f in dataclasses.fields(PoseOptions)})


def _output_fps(cfg: FarmConfig, probe: VideoProbe) -> Fraction:
    if cfg.output.fps is None:
        return Fraction(probe.fps_fraction)
    return Fraction(cfg.output.fps).limit_denominator(1001)


def _resample_index(frames: int, src_fps: Fraction, out_fps: Fraction) -> np.ndarray:
    """Source frame shown at each output frame; the output lasts as long as the source."""
    if src_fps == out_fps:
        return np.arange(frames)
    total = max(1, round(frames * out_fps / src_fps))
    return np.minimum((np.arange(total) * src_fps / out_fps).astype(np.int64), frames - 1)


def progress_callback(reporter: Reporter):
    """A `progress(frames_done)` function that advances the reporter by the difference."""
    done = [0]

    def update(n: int) -> None:
        reporter.advance(n - done[0])
        done[0] = n

    return update


@contextmanager
def _timed(timings: dict, name: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
