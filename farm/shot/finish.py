"""Steps 9-11 of a shot: join the encoded segments with the audio, write the pose artifacts, judge
the quality, write the report, and commit the manifest."""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np

from farm.errors import FarmError
from farm.manifest import window_cost
from farm.shot.outcome import ShotResult, artifacts, commit, fail_shot
from farm.shot.planned import ShotPlan
from farm.shot.segment import encode_segment
from farm.shot.tools import backend_spec, storage_for
from farm.shot.types import LICENSE_DIR, PREVIEW, QA_SUFFIX, QA_TABLE, REPORT, VIDEO, WORK, timed
from farm.storage import Storage
from farm.windows import overlap_overhead


def finish_shot(plan: ShotPlan, window_logs: list[dict], segment_logs: list[dict] | None = None, *,
                pose_artifacts: Callable[[], None] | None = None, preview: dict | None = None) -> ShotResult:
    """Join the encoded segments (encoding them here first when `segment_logs` is None) with the
    reference's audio into exactly T frames, write the pose artifacts (or wait for
    `pose_artifacts()`, which returns once they were written meanwhile, raising what went wrong),
    then the manifest; the checkpoints and segments are removed on success. preview: what
    `make_preview` returned when it drew the pose preview beforehand."""
    from farm.media.encode import join_segments

    cfg, take, timings, record = plan.cfg, plan.take, plan.timings, plan.record
    timings["generate"] = sum(w.get("seconds", 0.0) for w in window_logs)  # inside the backend, on whichever worker
    record["cost"] = window_cost(window_logs, cfg.cost.gpu_hour, cfg.cost.cpu_hour)  # spent, whatever happens next
    try:
        take.mkdir(parents=True, exist_ok=True)  # the new take is made beside the last one, which stays until the commit
        # 8-9. Stitch and encode segment by segment (streaming: one window and an overlap tail in
        # memory), then join the segments without re-encoding.
        if segment_logs is None:
            segment_logs = [encode_segment(plan, segment, window_logs) for segment in plan.segments]
        # On whichever worker, like "generate"; QA's measuring runs inside the segments' encoding.
        timings["measure"] = sum(s.get("measure_seconds", 0.0) for s in segment_logs)
        timings["encode"] = sum(s["seconds"] for s in segment_logs) - timings["measure"]
        with timed(timings, "join"):
            parts = [plan.local_segment(segment) for segment in plan.segments]
            frames = join_segments(parts, take / VIDEO, fps=plan.fps, audio_from=plan.audio)
            if frames != len(plan.targets):
                raise RuntimeError(f"the joined video has {frames} frames, expected {len(plan.targets)}")
        record["windows"] = [{k: v for k, v in log.items() if k not in ("lab", "model", "prompts")} for log in window_logs]
        models = [log["model"] for log in window_logs if "model" in log]
        if models:
            record["model"] = models[0]
        prompts = [log["prompts"] for log in window_logs if "prompts" in log]
        if prompts:  # what the model was given ("prompt" is what the shot asked for, maybe nothing)
            record["prompts"] = prompts[0]
        record["segments"] = segment_logs

        # 9b. Provenance: the licence document beside the video, then the signed C2PA credentials
        #     in it (before its hash goes into the record's artifacts).
        with timed(timings, "provenance"):
            _copy_license(plan)
            record["provenance"]["c2pa"] = _credentials(plan)

        # 10. Pose artifacts: parquet tables and the preview video (or those made meanwhile).
        if pose_artifacts is None:
            write_pose_artifacts(plan, preview_made=preview is not None)
            if preview is not None:  # drawn beforehand, beside the windows: when, and for how long
                timings["artifacts"] += preview["seconds"]
                record["preview"] = preview
        else:
            pose_artifacts()

        # 10b. Quality: what the segments measured, against the target pose; thresholds.
        with timed(timings, "qa"):
            from farm.qa.measure import verdict, write_quality_table

            quality = _quality(plan)
            quality.frames["source_frame"] = plan.index
            write_quality_table(quality, take / QA_TABLE)

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
            "retakes": sum(len(w["takes"]) - 1 for w in window_logs if w.get("takes")),  # qa.retakes
            **quality.summary,
            "windows": quality.windows,
        }
        reasons = verdict(record["metrics"], quality.windows, cfg.qa)
        record["qa"] = {"needs_rerender": bool(reasons), "reasons": reasons}
        record["artifacts"] = artifacts(take)
        record.update(status="succeeded", error=None)
        record["timings"] = {k: round(v, 3) for k, v in timings.items()}  # the report shows them

        # 11. Report, then the manifest: the commit.
        with timed(timings, "report"):
            _write_report(plan, record)
        record["timings"] = {k: round(v, 3) for k, v in timings.items()}
        result = commit(record, take, plan.folder, plan.uri, storage_for(cfg))
    except Exception as exc:  # noqa: BLE001 - recorded in the manifest
        return fail_shot(plan.shot, plan.folder, record, timings, exc, uri=plan.uri, cfg=cfg, take=take)
    # Checkpoints and segments go only once the manifest is committed; failing to remove them harms nothing.
    for work in WORK:
        shutil.rmtree(plan.folder / work, ignore_errors=True)
        if plan.remote:
            try:
                storage_for(cfg).delete_prefix(Storage.join(plan.uri, work))
            except FarmError:
                pass
    return result


def write_pose_artifacts(plan: ShotPlan, *, preview_made: bool = False) -> None:
    """Step 10 into the take: the driving and target poses as parquet tables, the pose preview
    video and OpenPose JSON (as configured); timed as "artifacts". preview_made: the preview was
    made beforehand by `make_preview` (on any worker) and is copied into the take."""
    from farm.pose.store import write_parquet, write_rig_parquet

    cfg, take = plan.cfg, plan.take
    with timed(plan.timings, "artifacts"):
        (take / "poses").mkdir(parents=True, exist_ok=True)
        write_parquet(plan.driving, take / "poses" / "driving.parquet")
        write_rig_parquet(
            plan.targets, take / "poses" / "target.parquet", fps=float(plan.fps),
            width=plan.canvas.width, height=plan.canvas.height,
        )
        if cfg.output.pose_preview and preview_made:
            shutil.copyfile(plan.local_artifact(PREVIEW), take / PREVIEW)
        elif cfg.output.pose_preview:
            _draw_preview(plan, take / PREVIEW)
        if cfg.output.openpose_json:
            from farm.pose.openpose import write_openpose_json

            write_openpose_json(plan.driving, take / "poses" / "openpose")


def make_preview(plan: ShotPlan) -> dict:
    """The pose preview (when output.pose_preview asks for one) into the shot's work folder, uploaded for s3://
    outputs, for the finish to take: a campaign draws it while the windows render instead of after
    them. Returns when it started (epoch seconds, as the windows' logs say) and how long it took,
    for the record and the shot's "artifacts" time."""
    started, clock = time.time(), time.perf_counter()
    path = plan.artifact_file(PREVIEW)
    path.parent.mkdir(parents=True, exist_ok=True)
    _draw_preview(plan, path)
    if plan.remote:
        storage_for(plan.cfg).put_file(path, plan.artifact_uri(PREVIEW))
    return {"started": round(started, 3), "seconds": round(time.perf_counter() - clock, 3)}


def _draw_preview(plan: ShotPlan, path: Path) -> None:
    from farm.pose.preview import write_pose_preview

    write_pose_preview(path, plan.driving, plan.fps, index=plan.index, targets=plan.targets,
                       canvas_size=(plan.canvas.width, plan.canvas.height))


def _copy_license(plan: ShotPlan) -> None:
    """rights.license_file, when it is a file, into the take as rights/<its name> (hashed with the
    artifacts; its source and hash are also among the record's inputs)."""
    source = plan.local_license()
    if source is not None:
        (plan.take / LICENSE_DIR).mkdir(exist_ok=True)
        shutil.copyfile(source, plan.take / LICENSE_DIR / PurePosixPath(str(plan.shot.rights["license_file"])).name)


def _credentials(plan: ShotPlan) -> dict:
    """Sign the take's video (provenance.sign) and say so for the record; unsigned, say why."""
    provenance = plan.cfg.provenance
    if not provenance.sign:
        return {"signed": False, "reason": "provenance.sign=false: the video carries no C2PA content credentials"}
    from farm.provenance.credentials import ASSERTION, load_signing, manifest_definition, record_digest, sign_video
    from farm.provenance.watermark import code_hex

    spec = backend_spec(plan.cfg)
    signing = load_signing(provenance)
    watermark = None if plan.watermark is None else code_hex(plan.watermark)
    definition = manifest_definition(plan.record, source_type=spec.source_type, backend=f"{spec.name}/{spec.version}",
                                     watermark=watermark)
    sign_video(plan.take / VIDEO, definition, signing, tsa_url=provenance.tsa_url)
    return {"signed": True, "signer": signing.signer, "alg": signing.alg, "digital_source_type": spec.source_type,
            "assertion": ASSERTION, "record_sha256": record_digest(plan.record), "timestamped": bool(provenance.tsa_url)}


def _quality(plan: ShotPlan):
    """The shot's quality (farm.qa.measure.Quality) from what its segments measured."""
    from farm.qa.measure import coco17_target, shot_quality

    parts = []
    for segment in plan.segments:
        with np.load(plan.local_segment(segment, QA_SUFFIX)) as stored:
            parts.append({key: stored[key] for key in stored.files})
    target = coco17_target(plan.targets, plan.driving_at(plan.index))
    return shot_quality(parts, plan.windows, target, detector_sees_character=plan.detector_sees,
                        frame_size=(plan.canvas.width, plan.canvas.height))


def _write_report(plan: ShotPlan, record: dict) -> None:
    """The shot's report.html (and thumb.jpg, for the campaign page). A report that cannot be made
    costs the shot nothing: the reason is recorded and `farm report` can try again."""
    from farm.report import ShotSources, write_shot_report

    try:
        write_shot_report(ShotSources(plan.take, record, motion=plan.local_motion(), character=plan.character.image))
        record["report"], record["report_error"] = REPORT, None
    except Exception as exc:  # noqa: BLE001 - a view of the shot, not the shot
        record["report"], record["report_error"] = None, f"{type(exc).__name__}: {exc}"
