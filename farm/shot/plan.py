"""Steps 2-6 of a shot: character, performer's pose, preflight, retarget and window plan (`plan_shot`),
and `ShotPlan`, everything the window, segment and finish stages need, with the paths of their files."""
from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from farm.backends.base import BackendSpec, WindowRequest
from farm.config import FarmConfig
from farm.errors import FarmError
from farm.manifest import SCHEMA_VERSION, versions
from farm.media.probe import VideoProbe
from farm.pose.extract import PoseOptions, PoseSequence
from farm.provenance.rights import check_rights
from farm.provenance.watermark import MIN_SIDE, SCHEME, code_hex, watermark_code
from farm.shot.inputs import as_given, content_key, fallback_id, fetch_inputs, probe_inputs
from farm.shot.outcome import ShotResult, claim, fail_shot, finished, reuse_verdict
from farm.shot.tools import cache_root, pose_options, stage_root, storage_for
from farm.shot.types import SEGMENTS, TAKE, WINDOWS, Reporter, Shot, Silent, progress_callback, timed
from farm.storage import Storage
from farm.types import Canvas, Character, check_shot_id
from farm.windows import Segment, Window, plan_chained_windows, plan_segments, plan_windows


@dataclass
class ShotPlan:
    """A shot ready to render: everything the window workers and the final stitch need.

    targets: (T, 15, 3) retargeted joints on the canvas; layers: (T, 4) limb order; behind: (T,)
    limbs behind the torso; index: (T,) source frame of each output frame; record: the manifest so
    far; timings: seconds per stage so far. chains: window.mode=chained, the runs [first, stop) of
    windows that each continue from the one before (empty for parallel windows); condition_frames:
    how many frames of the window before a chained window continues from.
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
    license: Path | None = None  # rights.license_file, local to the node that planned the shot
    detector_sees: bool = True  # mediapipe finds the character's pose in its image: QA re-detects it on the output
    chains: list[tuple[int, int]] = field(default_factory=list)
    condition_frames: int = 1
    run: str = field(default_factory=lambda: secrets.token_hex(6))  # this render's take: folder/.take-<run>/

    @property
    def take(self) -> Path:
        """Where the finish makes this render's published files; moved into the folder when committed."""
        return self.folder / f"{TAKE}{self.run}"

    def request(self, window: Window) -> WindowRequest:
        return WindowRequest(
            shot_id=self.shot_id, start=window.start, end=window.end,
            targets=self.targets[window.start : window.end], layers=self.layers[window.start : window.end],
            prompt=self.shot.prompt or self.cfg.prompt, seed=self.cfg.seed,
            options={"limbs_behind_torso": self.behind[window.start : window.end]},
        )

    def previous_window(self, window: Window) -> Window | None:
        """The window this one continues from (window.mode=chained), None when it starts a chain or
        windows are independent."""
        if any(first < window.index < stop for first, stop in self.chains):
            return self.windows[window.index - 1]
        return None

    def next_window(self, window: Window) -> Window | None:
        """The window that continues from this one (window.mode=chained), if any."""
        if any(first <= window.index < stop - 1 for first, stop in self.chains):
            return self.windows[window.index + 1]
        return None

    def held_frames(self, window: Window) -> int:
        """Frames at the start of the window that re-make the window before it (chained): the
        stitch keeps the earlier window's frames there."""
        return self.condition_frames if self.previous_window(window) is not None else 0

    @property
    def segments(self) -> list[Segment]:
        """The runs of windows that are stitched and encoded on their own, then joined."""
        return plan_segments(self.windows, len(self.targets), self.cfg.output.segment_frames)

    @property
    def remote(self) -> bool:
        return Storage.is_remote(self.uri)

    def window_file(self, window: Window) -> Path:
        """Checkpoint of one rendered window, named by its content: a rerun after a crash finds it."""
        key = hashlib.sha256(f"{self.content_key}:{window.start}:{window.end}:{window.render_length}".encode()).hexdigest()[:16]
        return self.folder / WINDOWS / f"{window.index:05d}-{key}.npz"

    def window_uri(self, window: Window) -> str:
        return Storage.join(self.uri, WINDOWS, self.window_file(window).name)

    def has_window(self, window: Window) -> bool:
        """A checkpoint exists (for s3:// outputs: in the store, wherever it was rendered)."""
        if self.remote:  # only an uploaded checkpoint counts: a local one may have failed to upload
            return storage_for(self.cfg).exists(self.window_uri(window))
        return self.window_file(window).exists()

    def segment_file(self, segment: Segment, suffix: str = ".mp4") -> Path:
        """The segment's video, or with suffix QA_SUFFIX what QA measured on it."""
        return self.folder / SEGMENTS / f"{segment.index:04d}{suffix}"

    def segment_uri(self, segment: Segment, suffix: str = ".mp4") -> str:
        return Storage.join(self.uri, SEGMENTS, self.segment_file(segment, suffix).name)

    def local_window(self, window: Window) -> Path:
        """The window's checkpoint on this machine, downloaded from the store if another node made it."""
        return self._on_this_node(self.window_file(window), self.window_uri(window))

    def window_frames(self, window: Window) -> np.ndarray:
        with np.load(self.local_window(window)) as stored:
            return stored["frames"]

    def continuation(self, window: Window) -> np.ndarray | None:
        """The frames a chained window continues from: the `condition_frames` frames of the window
        before it where it starts, as that window handed them over at the size it rendered them
        (checkpoint key "handoff"), else from its canvas-size frames. None when it continues from
        nothing."""
        before = self.previous_window(window)
        if before is None:
            return None
        with np.load(self.local_window(before)) as stored:
            if "handoff" in stored.files:
                return stored["handoff"]
            at = window.start - before.start  # (the last window, shifted back to end the shot, overlaps more)
            return stored["frames"][at : at + max(1, self.condition_frames)]

    def local_segment(self, segment: Segment, suffix: str = ".mp4") -> Path:
        """The segment's file on this machine, downloaded from the store if another node made it."""
        return self._on_this_node(self.segment_file(segment, suffix), self.segment_uri(segment, suffix))

    def local_motion(self) -> Path:
        """The motion video on this machine (fetched into the input cache on another node)."""
        if self.motion.exists():
            return self.motion
        return storage_for(self.cfg).fetch(str(self.shot.motion), cache_root(self.cfg) / "inputs")

    def local_license(self) -> Path | None:
        """The licence document on this machine (fetched into the input cache on another node)."""
        if self.license is None or self.license.exists():
            return self.license
        return storage_for(self.cfg).fetch(str(self.shot.rights["license_file"]), cache_root(self.cfg) / "inputs")

    @property
    def watermark(self) -> int | None:
        """The code every frame carries, None when the frames are left unmarked (see _provenance)."""
        return None if _unmarked(self.cfg, self.canvas) else watermark_code(self.shot_id)

    def driving_at(self, index: np.ndarray) -> PoseSequence:
        """The driving pose on the source frames `index` (one per output frame)."""
        at = index - self.driving.start
        d = self.driving
        return PoseSequence(body=d.body[at], left_hand=d.left_hand[at], right_hand=d.right_hand[at], face=d.face[at],
                            fps=d.fps, width=d.width, height=d.height, start=int(index.min()))

    def _on_this_node(self, path: Path, uri: str) -> Path:
        """A working file of the shot (checkpoint, segment) here, fetched from the store when another node made it."""
        if path.exists() or not self.remote:
            return path
        return storage_for(self.cfg).fetch(uri, path.parent / "fetched")


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
        config = cfg.to_dict() | {"prompt": shot.prompt or cfg.prompt}  # the prompt the shot is rendered with
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

        # 3. Pose of the performer (and, alongside where possible, the people in the video).
        people_count = (people or _count_here)(local.motion)
        reporter.stage("pose", motion_probe.frame_count)
        with timed(timings, "pose"):
            driving = (extract or extract_in_process)(local.motion, motion_probe.frame_count, pose_options(cfg), reporter)

        # 4. Preflight: the checks a careful user would make before spending compute.
        from farm.qa.preflight import run_preflight

        with timed(timings, "preflight"):
            preflight = run_preflight(local.motion, driving, character.joints, character.image.shape[0], people_count())
        record["preflight"] = preflight.to_dict()
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
        record["retarget"] = {"anchor": moved.anchor, "driven_bones": int(moved.driven.sum())}
        record["provenance"] = _provenance(shot_id, cfg, moved.canvas)

        # 6. Window plan.
        windows, chains = _plan_windows(cfg, spec, len(index))
    except Exception as exc:  # noqa: BLE001 - one bad shot must never stop a campaign
        return fail_shot(shot, folder, record | {"shot_id": shot_id}, timings, exc, uri=uri, cfg=cfg)
    audio = local.motion if cfg.output.keep_audio and motion_probe.has_audio else None
    return ShotPlan(
        shot=shot, cfg=cfg, shot_id=shot_id, content_key=key, folder=folder, uri=uri, record=record, timings=timings,
        character=character, canvas=moved.canvas, targets=moved.targets, layers=layers, behind=behind,
        windows=windows, fps=fps, audio=audio, driving=driving, index=index, motion=local.motion, license=local.license,
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
    reason = _unmarked(cfg, canvas)
    watermark = {"code": None, "reason": reason} if reason else {"code": code_hex(watermark_code(shot_id)), "scheme": SCHEME}
    return {"watermark": watermark, "rights_required": cfg.provenance.rights_required}


def _unmarked(cfg: FarmConfig, canvas: Canvas) -> str | None:
    """Why the frames carry no watermark, None when they do."""
    if not cfg.provenance.watermark:
        return "provenance.watermark=false"
    if min(canvas.width, canvas.height) < MIN_SIDE:
        return f"the frame's short side is under {MIN_SIDE} px, too small for the mark to survive encoding"
    return None


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


def _count_here(video: Path) -> Callable[[], tuple[int, str]]:
    from farm.qa.preflight import count_people

    return lambda: count_people(video)


def extract_in_process(video: Path, frame_count: int, options: PoseOptions, reporter: Reporter) -> PoseSequence:
    from farm.pose.extract import extract_poses

    return extract_poses(video, options=options, progress=progress_callback(reporter))


def _versions(spec: BackendSpec) -> dict:
    found = versions()
    found["backend"] = f"{spec.name}/{spec.version}"
    found["pose_model"] = "mediapipe holistic/pose_landmark_full"
    return found


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
