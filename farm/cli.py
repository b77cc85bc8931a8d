"""`farm` command line: render one shot, extract poses, run a campaign, show the config.

Exit status: 0 all good; 2 bad input or configuration (one line on stderr, no traceback);
1 an internal error; 3 a campaign in which some shots failed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from fractions import Fraction
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from farm.errors import FarmError

console = Console(stderr=True, highlight=False, soft_wrap=True)


class RichReporter:
    """Progress bars on the terminal: one per stage of the shot being rendered."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.label = label
        self.task = None

    def stage(self, name: str, total: int | None = None) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[self.task].total or 0)
        self.task = self.progress.add_task(f"{self.label} {name}", total=total, unit="fr")

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)


class _FramesPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        unit = task.fields.get("unit")
        return Text(f"{task.speed:5.1f} {unit}/s" if task.speed and unit else "")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _FramesPerSecond(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="farm", description="motion-farm: animate characters with the motion of real videos")
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser("render", help="render one character performing the motion of one video")
    render.add_argument("motion", help="motion reference video (mp4, mov, mkv, webm, gif)")
    render.add_argument("character", help="character image (png, jpg, webp)")
    render.add_argument("-o", "--out", default="out", help="output folder or s3:// prefix (default ./out); the shot goes to OUT/<shot_id>/")
    render.add_argument("--prompt", default="", help="text prompt (recorded; used by backends that take one)")
    render.add_argument("--character-skeleton", help="skeleton file: AnimatedDrawings char_cfg.yaml or farm-skeleton/1 YAML")
    render.add_argument("--character-mask", help="mask image: white on the character, black elsewhere")
    render.add_argument("--id", help="shot id (default: derived from inputs and config)")
    render.add_argument("--force", action="store_true", help="render again even if this exact shot is already finished")
    render.add_argument("overrides", nargs="*", help="config overrides, e.g. match=video output.size=720")

    pose = sub.add_parser("pose", help="extract the performer's pose from a video (Parquet, OpenPose JSON, preview)")
    pose.add_argument("video")
    pose.add_argument("-o", "--out", default="out/poses", help="output folder (default ./out/poses)")
    pose.add_argument("--openpose-json", action="store_true", help="also write one OpenPose JSON per frame")
    pose.add_argument("overrides", nargs="*", help="config overrides, e.g. pose.hands=false")

    submit = sub.add_parser("submit", help="render every shot of a campaign file on Ray (local cluster or RAY_ADDRESS)")
    submit.add_argument("campaign", help="campaign YAML (see jobs/demo.yaml) or shot list, or a folder: every campaign file in it")
    submit.add_argument(
        "-o", "--out", default="out", help="output folder or s3:// prefix (default ./out); shots go to OUT/<campaign>/shots/"
    )
    submit.add_argument("--force", action="store_true", help="render again shots that are already finished")
    submit.add_argument("overrides", nargs="*", help="config overrides applied to every shot")

    report = sub.add_parser("report", help="rebuild the HTML reports of a campaign (each shot's and the campaign page)")
    report.add_argument("campaign", help="the campaign's output folder, OUT/<campaign> (local or s3://)")
    report.add_argument("overrides", nargs="*", help="config overrides, e.g. storage.endpoint_url=http://minio:9000")

    sweep = sub.add_parser(
        "sweep", help="render every combination of swept settings for every shot of a campaign, as one batch, and compare them"
    )
    sweep.add_argument("campaign", help="campaign YAML (see jobs/demo.yaml)")
    sweep.add_argument("-o", "--out", default="out", help="output folder or s3:// prefix (default ./out)")
    sweep.add_argument("--name", help="the sweep's folder under OUT (default <campaign>-sweep)")
    sweep.add_argument("--force", action="store_true", help="render again variants that are already finished")
    sweep.add_argument("overrides", nargs="*", help="Hydra sweep overrides, e.g. match.mode=video,image match.motion_weight=0.3,0.9")

    status = sub.add_parser("status", help="show the shots of a campaign: state, windows, seconds, QA, error")
    status.add_argument("campaign", help="the campaign's output folder, OUT/<campaign> (local or s3://)")
    status.add_argument("overrides", nargs="*", help="config overrides, e.g. storage.endpoint_url=http://minio:9000")

    config = sub.add_parser("config", help="print the fully resolved configuration")
    config.add_argument("overrides", nargs="*")
    return parser


def _quiet_native_logs() -> None:
    """mediapipe's C++ code logs warnings straight to file descriptor 2 and cannot be told not to.
    Point descriptor 2 at /dev/null and give Python's stderr (our messages, progress, warnings) a
    copy of the real one. FARM_DEBUG=1 keeps everything."""
    if os.environ.get("FARM_DEBUG"):
        return
    real = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(real, "w", buffering=1)


def main() -> int:
    """The console script: native log noise off, then `run`."""
    _quiet_native_logs()
    return run(sys.argv[1:])


def run(argv: list[str]) -> int:
    """Run one farm command; returns the exit status."""
    parser = _parser()
    # Overrides may come before or after options (`farm render a.mp4 b.png match=video -o out`).
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        commands = {
            "render": cmd_render, "pose": cmd_pose, "submit": cmd_submit, "sweep": cmd_sweep, "status": cmd_status,
            "report": cmd_report,
            "config": cmd_config,
        }
        return commands[args.command](args)
    except FarmError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except Exception as exc:  # a bug of ours: say so in one line, keep the traceback for who asks
        if os.environ.get("FARM_DEBUG"):
            raise
        console.print(f"[red]internal error:[/red] {type(exc).__name__}: {exc} (set FARM_DEBUG=1 for the traceback)")
        return 1


def cmd_render(args) -> int:
    from farm.config import load_config
    from farm.render import Shot, render_shot

    cfg = load_config(args.overrides)
    shot = Shot(
        motion=args.motion, character=args.character, skeleton=args.character_skeleton, mask=args.character_mask,
        prompt=args.prompt, shot_id=args.id,
    )
    with _progress() as progress:
        result = render_shot(shot, cfg, args.out, reporter=RichReporter(progress, "shot"), force=args.force)
    return _report(result)


class CampaignProgress:
    """Two bars while a campaign runs on Ray: shots finished, and frames rendered (with frames/s
    and ETA). extras: more columns of the campaign record for some shots, by shot id."""

    def __init__(self, progress: Progress, record, extras: dict[str, dict] | None = None) -> None:
        self.progress, self.record, self.extras = progress, record, extras or {}
        self.shots_task = progress.add_task("shots", total=None)
        self.frames_task = progress.add_task("frames", total=0, unit="fr")

    def shots(self, total: int) -> None:
        self.progress.update(self.shots_task, total=total)

    def frames(self, added_total: int) -> None:
        task = self.progress.tasks[self.frames_task]
        self.progress.update(self.frames_task, total=(task.total or 0) + added_total)

    def frames_done(self, n: int) -> None:
        self.progress.advance(self.frames_task, n)

    def shot_done(self, result) -> None:
        self.progress.advance(self.shots_task, 1)
        self.record.add(result, self.extras.get(result.shot_id))
        _say(result)


CAMPAIGN_SUFFIXES = (".yaml", ".yml", ".csv", ".parquet")


def cmd_submit(args) -> int:
    """One campaign file, or every campaign file of a folder in name order (a night's campaigns:
    one that cannot be read is reported and the others still run; exit status 2 then)."""
    from farm.campaign import load_campaign

    folder = Path(args.campaign)
    if not folder.is_dir():
        return _submit(load_campaign(folder), args)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CAMPAIGN_SUFFIXES)
    if not files:
        raise FarmError(str(folder), "holds no campaign file", f"put campaign files ({', '.join(CAMPAIGN_SUFFIXES)}) in it")
    unreadable, failed = False, False
    for path in files:
        try:
            failed |= _submit(load_campaign(path), args) != 0
        except FarmError as exc:
            console.print(f"[red]error:[/red] {exc}")
            unreadable = True
    return 2 if unreadable else 3 if failed else 0


def _submit(campaign, args) -> int:
    items = [(item.shot, _shot_config([*campaign.defaults, *item.overrides, *args.overrides], item.seed_offset))
             for item in campaign.shots]
    batch = _render_batch(campaign.name, items, args.out, force=args.force)
    return 3 if batch.doc["counts"]["shots_failed"] else 0


def cmd_sweep(args) -> int:
    from farm.campaign import load_campaign
    from farm.sweep import expand, slug, variant_ids

    campaign = load_campaign(args.campaign)
    fixed, settings = expand(args.overrides)
    items, extras, groups = [], {}, {}
    for n, item in enumerate(campaign.shots):
        base = item.shot.shot_id or f"{slug(Path(str(item.shot.motion)).stem)}-{n + 1}"
        for setting, shot_id in zip(settings, variant_ids(base, settings)):
            shot = dataclasses.replace(item.shot, shot_id=shot_id)
            items.append((shot, _shot_config([*campaign.defaults, *item.overrides, *fixed, *setting.overrides], item.seed_offset)))
            extras[shot.shot_id] = {"sweep_of": base, "settings": " ".join(setting.overrides)}
            groups.setdefault(base, []).append((setting, shot.shot_id))
    name = args.name or f"{campaign.name}-sweep"
    console.print(f"sweep {name}: {len(campaign.shots)} shot(s) x {len(settings)} setting(s) = {len(items)} renders, one batch")
    batch = _render_batch(name, items, args.out, force=args.force, extras=extras)
    _comparisons(batch, groups)
    return 3 if batch.doc["counts"]["shots_failed"] else 0


def _shot_config(overrides: list[str], seed_offset: int):
    """A shot's config, or the FarmError that says why it has none (the shot is then recorded as failed)."""
    from farm.config import load_config

    try:
        cfg = load_config(overrides)
        return dataclasses.replace(cfg, seed=cfg.seed + seed_offset)
    except FarmError as exc:
        return exc


@dataclasses.dataclass
class _Batch:
    out: str  # OUT/<name>
    doc: dict  # campaign.json
    results: list
    folder: Path  # where campaign files are made (OUT/<name> itself, or a staging folder for s3://)
    store: object
    cfg: object  # the first shot's config (storage and cache settings), None when no shot has one


def _render_batch(name: str, items: list, out_root: str, *, force: bool, extras: dict | None = None) -> _Batch:
    """Render (shot, config) items as one batch on Ray into OUT/<name>/shots/, keeping
    campaign.json up to date, then write campaign.parquet and the campaign report."""
    from farm.records import CampaignRecord
    from farm.render import stage_root, storage_for
    from farm.runtime.campaign import run_campaign
    from farm.runtime.cluster import connect
    from farm.storage import Storage

    out = Storage.join(out_root, name)
    first = next((cfg for _, cfg in items if not isinstance(cfg, FarmError)), None)
    runtime = first.runtime if first else None
    connect(runtime.address if runtime else None, runtime.num_cpus if runtime else None)
    store = storage_for(first) if first else Storage()
    record = CampaignRecord(stage_root(out, first), name, len(items), store if Storage.is_remote(out) else None, out)
    record.write()
    finished, results = False, []
    try:
        with _progress() as progress:
            results = run_campaign(
                items, Storage.join(out, "shots"), force=force,
                max_retries=runtime.max_retries if runtime else 0, progress=CampaignProgress(progress, record, extras),
            )
        finished = True
    finally:
        # Also when interrupted: the record says how far the run got, not "running" forever.
        doc = record.write(finished=True, interrupted=not finished)
        report = _campaign_report(doc, out, record.folder, store)
    counts = doc["counts"]
    console.print(
        f"campaign {name}: {counts['shots_succeeded']} rendered, {counts['shots_reused']} already done, "
        f"{counts['shots_failed']} failed; windows rendered {counts['windows_rendered']}, reused {counts['windows_reused']}"
        f"{' (nothing to render)' if counts['windows_rendered'] == 0 and counts['shots_failed'] == 0 else ''}; "
        f"output in {out}"
    )
    if counts["shots_flagged"]:
        console.print(f"[yellow]{counts['shots_flagged']} shot(s) need a re-render[/yellow] (QA thresholds, see the report)")
    if report:
        console.print(f"report: {report}")
    return _Batch(out, doc, results, record.folder, store, first)


def _comparisons(batch: _Batch, groups: dict[str, list]) -> None:
    """Per shot of a sweep: the grid video of its settings (OUT/<name>/comparisons/<shot>.mp4) and
    a table of their metrics on the terminal."""
    from rich.table import Table

    from farm.render import cache_root
    from farm.storage import Storage
    from farm.sweep import COMPARISONS, write_comparison

    results = {r.shot_id: r for r in batch.results}
    rows = {row["shot_id"]: row for row in batch.doc["shots"]}
    for base, variants in groups.items():
        target = batch.folder / COMPARISONS / f"{base}.mp4"
        uri = Storage.join(batch.out, COMPARISONS, target.name)
        try:  # the renders are done and recorded: a grid that cannot be made is a warning
            cells = []
            for setting, shot_id in variants:
                result = results.get(shot_id)
                if result is None or result.status == "failed":
                    cells.append((setting.label, None, f"failed: {result.error if result else 'not run'}"))
                    continue
                video = result.video or batch.store.fetch(result.video_uri, cache_root(batch.cfg) / "comparisons")
                cells.append((setting.label, video, ""))
            target.parent.mkdir(parents=True, exist_ok=True)
            write_comparison(target, cells)
            if Storage.is_remote(uri):
                batch.store.put_file(target, uri)
            console.print(f"comparison {base}: {uri}")
        except Exception as exc:  # noqa: BLE001
            console.print(f"[yellow]warning:[/yellow] no comparison for {base}: {exc}")
        table = Table(title=f"{base}: metrics per setting")
        for column in ("setting", "state", "PCK", "OKS", "jitter", "drift", "seam", "QA"):
            table.add_column(column)
        for setting, shot_id in variants:
            row = rows.get(shot_id, {})
            qa = _qa_word(row)
            table.add_row(setting.label, row.get("status", ""), *(_num(row.get(k)) for k in
                          ("pose_pck", "pose_oks", "jitter", "appearance_drift", "seam_score")), qa)
        console.print(table)


def _qa_word(row: dict) -> str:
    """A shot's QA state in one word: '' (failed), '-' (no QA record: rendered by an older farm)."""
    if row.get("status") == "failed":
        return ""
    if row.get("pose_source") is None and row.get("seam_score") is None:
        return "-"
    return "re-render" if row.get("needs_rerender") else "ok"


def _num(value) -> str:
    return "" if value is None else f"{value:.3g}"


def _campaign_report(doc: dict, out: str, folder, store) -> str | None:
    """The campaign page; a page that cannot be made is a warning, never a failed campaign."""
    from farm.report import publish_campaign_report

    try:
        return publish_campaign_report(doc, out, folder, store)
    except FarmError as exc:
        console.print(f"[yellow]warning:[/yellow] no campaign report: {exc}")
    except Exception as exc:  # noqa: BLE001 - the renders are done and recorded; say why the page is not
        console.print(f"[yellow]warning:[/yellow] no campaign report: {type(exc).__name__}: {exc}")
    return None


def cmd_report(args) -> int:
    import tempfile

    from farm.config import load_config
    from farm.records import read_campaign
    from farm.render import stage_root, storage_for
    from farm.report import publish_campaign_report, rebuild_shot_report
    from farm.storage import Storage

    cfg = load_config(args.overrides)
    store = storage_for(cfg)
    doc = read_campaign(args.campaign, store)
    with tempfile.TemporaryDirectory(prefix="farm-report-") as work:
        for row in doc["shots"]:
            try:
                made = rebuild_shot_report(Storage.join(args.campaign, "shots", row["shot_id"]), store, Path(work))
                console.print(f"{row['shot_id']}: {made or 'no report (' + row['status'] + ', no QA record)'}")
            except Exception as exc:  # noqa: BLE001 - one shot's report never stops the others
                console.print(f"[yellow]warning:[/yellow] {row['shot_id']}: no report: {exc}")
        folder = store.local_path(args.campaign) or stage_root(args.campaign, cfg)
        report = publish_campaign_report(doc, args.campaign, Path(folder), store)
    console.print(f"report: {report}")
    return 0


def cmd_status(args) -> int:
    from rich.table import Table

    from farm.config import load_config
    from farm.records import read_campaign
    from farm.render import storage_for

    doc = read_campaign(args.campaign, storage_for(load_config(args.overrides)))
    table = Table(title=f"campaign {doc['name']} ({doc['status']})")
    for column in ("shot", "state", "windows", "frames", "seconds", "QA", "error"):
        table.add_column(column)
    for row in doc["shots"]:
        windows = f"{row['windows_rendered']} new + {row['windows_reused']} reused"
        qa = _qa_word(row)
        if qa == "re-render":
            qa = "needs re-render: " + "; ".join(row.get("qa_reasons") or [])
        table.add_row(row["shot_id"], row["status"], windows, str(row["frames"] or ""), str(row["seconds"]), qa, row["error"] or "")
    counts = doc["counts"]
    Console(highlight=False, soft_wrap=True).print(table)
    print(
        f"{counts['shots_done']}/{counts['shots_total']} shots done: {counts['shots_succeeded']} rendered, "
        f"{counts['shots_reused']} reused, {counts['shots_failed']} failed, {counts.get('shots_flagged', 0)} need a re-render"
    )
    return 0


def cmd_pose(args) -> int:
    from farm.config import load_config
    from farm.media.probe import probe_video
    from farm.pose.extract import extract_poses
    from farm.pose.preview import write_pose_preview
    from farm.pose.store import write_parquet
    from farm.render import cache_root, pose_options, progress_callback, storage_for

    cfg = load_config(args.overrides)
    video = storage_for(cfg).fetch(args.video, cache_root(cfg) / "inputs")
    probe = probe_video(video, max_side=cfg.qa.max_side, max_duration_s=cfg.qa.max_video_seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with _progress() as progress:
        reporter = RichReporter(progress, Path(args.video).name)
        reporter.stage("pose", probe.frame_count)
        poses = extract_poses(video, options=pose_options(cfg), progress=progress_callback(reporter))
    stem = Path(args.video).stem
    write_parquet(poses, out / f"{stem}.parquet")
    write_pose_preview(out / f"{stem}_pose.mp4", poses, Fraction(probe.fps_fraction))
    console.print(f"poses: {out / f'{stem}.parquet'} ({len(poses)} frames); preview: {out / f'{stem}_pose.mp4'}")
    if args.openpose_json:
        from farm.pose.openpose import write_openpose_json

        files = write_openpose_json(poses, out / f"{stem}_openpose")
        console.print(f"OpenPose JSON: {len(files)} files in {out / f'{stem}_openpose'}")
    return 0


def cmd_config(args) -> int:
    import yaml

    from farm.config import load_config

    print(yaml.safe_dump(load_config(args.overrides).to_dict(), sort_keys=False), end="")
    return 0


def _say(result, *, report: bool = False) -> None:
    """One line per shot; with report, also where its report is and why it needs a re-render."""
    from farm.storage import Storage

    if result.status == "failed":
        console.print(f"[red]error:[/red] {result.error} (record: {Storage.join(result.uri, 'manifest.json')})")
        return
    verb = "already rendered" if result.status == "reused" else "rendered"
    qa = result.manifest.get("qa") or {}
    flag = " [yellow](needs a re-render)[/yellow]" if qa.get("needs_rerender") else ""
    console.print(f"[green]{verb}[/green] {result.video_uri}{flag}")
    if report:
        for reason in qa.get("reasons") or []:
            console.print(f"  QA: {reason}")
        if result.manifest.get("report"):
            console.print(f"report: {Storage.join(result.uri, result.manifest['report'])}")


def _report(result) -> int:
    _say(result, report=True)
    if result.status != "failed":
        return 0
    return 1 if "traceback" in result.manifest["error"] else 2


if __name__ == "__main__":
    sys.exit(main())
