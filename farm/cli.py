"""`farm` command line: render one shot, extract poses, run a campaign, verify a video, propose a
drawing's skeleton, show the config.

Exit status: 0 all good; 2 bad input or configuration (one line on stderr, no traceback);
1 an internal error; 3 a campaign in which some shots failed; `farm verify`: 4 credentials that do
not validate (or a signer the given roots do not trust), 5 no credentials and no watermark.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

from rich.console import Console
from rich.markup import escape
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

console = Console(stderr=True, highlight=False, soft_wrap=True)  # progress and diagnostics
results = Console(highlight=False, soft_wrap=True)  # what a command made: stdout (quiet with --json)


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
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _FramesPerSecond(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        redirect_stdout=False,  # results go to stdout as they come, progress stays on stderr
        redirect_stderr=False,
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
    render.add_argument("--rights", action="append", default=[], metavar="KEY=VALUE",
                        help="a right of the inputs, as in a campaign (motion_source, character_source, license, license_file, "
                             "consent, motion_consent, character_consent, usage); repeat for each")
    render.add_argument("--force", action="store_true", help="render again even if this exact shot is already finished")
    render.add_argument("--json", action="store_true", help="print the result as JSON on stdout (for scripts)")
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
    submit.add_argument("--name", help="the campaign's name, its folder OUT/<name> (default: the YAML's name, a shot list's file name)")
    submit.add_argument("--force", action="store_true", help="render again shots that are already finished")
    submit.add_argument("--check", action="store_true", help="check the campaign and every shot's settings; render nothing")
    submit.add_argument("--json", action="store_true", help="print each campaign's record as JSON on stdout (for scripts)")
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
    status.add_argument("--json", action="store_true", help="print campaign.json on stdout (for scripts)")
    status.add_argument("--watch", action="store_true", help="redraw the table until the campaign is no longer running (Ctrl-C stops)")
    status.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between redraws with --watch (default 2)")
    status.add_argument("overrides", nargs="*", help="config overrides, e.g. storage.endpoint_url=http://minio:9000")

    cancel = sub.add_parser("cancel", help="stop a running campaign cleanly (from any machine): no more shots start, "
                            "windows in flight are dropped, finished ones are kept; its record says cancelled")
    cancel.add_argument("campaign", help="the campaign's output folder, OUT/<campaign> (local or s3://)")
    cancel.add_argument("--wait", type=float, default=120.0, metavar="S",
                        help="seconds to wait for the run to stop (default 120; 0: ask and return)")
    cancel.add_argument("overrides", nargs="*", help="config overrides, e.g. storage.endpoint_url=http://minio:9000")

    job = sub.add_parser("job", help="run farm submit of a campaign file or folder as a Ray Job on the cluster's head and follow it "
                         "(the submitter may die, the campaign goes on; run again, it attaches)")
    job.add_argument("campaign", help="campaign file, or a folder: every campaign file in it")
    job.add_argument("-o", "--out", required=True, help="output folder or s3:// prefix, as the head sees it")
    job.add_argument("--address", default=os.environ.get("FARM_RAY_JOBS"),
                     help="the Ray head's job server (dashboard) URL, e.g. http://farm-head-svc:8265 (default: FARM_RAY_JOBS)")
    job.add_argument("--id", help="the job's submission id (default farm-<campaign>-<UTC date>: one a night)")
    job.add_argument("overrides", nargs="*", help="config overrides applied to every shot (as for farm submit)")

    requeue = sub.add_parser("requeue", help="render some shots of a campaign again: failed, flagged (with the next seed) "
                             "or named ones; every other finished shot is reused")
    requeue.add_argument("campaign", help="the campaign's output folder, OUT/<campaign> (local or s3://)")
    requeue.add_argument("--failed", action="store_true", help="the shots that failed")
    requeue.add_argument("--flagged", action="store_true",
                         help="the shots QA flagged for a re-render, with the next seed (kept from now on)")
    requeue.add_argument("--shot", action="append", default=[], metavar="ID", help="this shot, rendered again (repeatable)")
    requeue.add_argument("--json", action="store_true", help="print the campaign's record as JSON on stdout (for scripts)")
    requeue.add_argument("overrides", nargs="*", help="the operator's config overrides, as for farm submit")

    verify = sub.add_parser("verify", help="read a video's content credentials and watermark: who signed it, from what, which shot")
    verify.add_argument("video")
    verify.add_argument("--records", help="farm output folder in which to look up the watermark's shot (default: the video's folder)")
    verify.add_argument("overrides", nargs="*", help="config overrides, e.g. provenance.trust=roots.pem")

    skeleton = sub.add_parser(
        "skeleton", help="propose a drawing's skeleton from its shape: a farm-skeleton/1 YAML and an overlay PNG to check and edit"
    )
    skeleton.add_argument("image", help="character image (a drawing of a humanoid standing upright)")
    skeleton.add_argument(
        "--mask", "--character-mask", dest="mask", help="mask image: white on the character, black elsewhere (default: cut from the paper)"
    )
    skeleton.add_argument(
        "-o", "--out", help="the YAML to write (default ./<image stem>_skeleton.yaml); the overlay goes next to it (.png)"
    )

    library = sub.add_parser("library", help="the motion library of an output: named motion videos that campaigns use as library:NAME")
    actions = library.add_subparsers(dest="library_command", required=True)
    add = actions.add_parser("add", help="add a motion video as NAME: a copy, its poses (extracted now) and its rights")
    add.add_argument("video", help="motion video (a path, file:// or s3:// URI)")
    add.add_argument("--name", required=True, help="the name campaigns use: motion: library:NAME (lower-case letters, digits, . _ -)")
    add.add_argument("--tags", default="", help="comma-separated tags, e.g. dance,loop (shown by farm library list)")
    add.add_argument("--rights", action="append", default=[], metavar="KEY=VALUE",
                     help="a right of the motion (motion_source, motion_consent or consent, license, usage); repeat for each; "
                          "every shot that uses the motion carries them")
    add.add_argument("-o", "--out", default="out", help="the output folder or s3:// prefix whose library it joins (default ./out)")
    add.add_argument("--force", action="store_true", help="replace a motion of the same name")
    add.add_argument("overrides", nargs="*", help="config overrides, e.g. pose.smoothing=false (the poses are extracted with them)")
    listing = actions.add_parser("list", help="the named motions of an output's library")
    listing.add_argument("-o", "--out", default="out", help="the output folder or s3:// prefix (default ./out)")
    listing.add_argument("--json", action="store_true", help="print the motions as JSON on stdout (for scripts)")
    listing.add_argument("overrides", nargs="*", help="config overrides, e.g. storage.endpoint_url=http://minio:9000")

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
    results.quiet = bool(getattr(args, "json", False))  # --json: stdout holds the JSON alone
    try:
        commands = {
            "render": cmd_render, "pose": cmd_pose, "submit": cmd_submit, "sweep": cmd_sweep, "status": cmd_status,
            "cancel": cmd_cancel, "requeue": cmd_requeue, "job": cmd_job, "report": cmd_report, "verify": cmd_verify,
            "skeleton": cmd_skeleton,
            "library": cmd_library, "config": cmd_config,
        }
        return commands[args.command](args)
    except FarmError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except Exception as exc:  # a bug of ours: say so in one line, keep the traceback for who asks
        if os.environ.get("FARM_DEBUG"):
            raise
        console.print(f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} (set FARM_DEBUG=1 for the traceback)")
        return 1


def cmd_render(args) -> int:
    from farm import api

    with _progress() as progress:
        result = api.render(
            args.motion, args.character, out=args.out, overrides=args.overrides, skeleton=args.character_skeleton,
            mask=args.character_mask, prompt=args.prompt, shot_id=args.id, force=args.force, rights=_rights(args.rights),
            reporter=RichReporter(progress, "shot"),
        )
    if args.json:
        _json(_shot_json(result))
    return _report(result)


def _rights(given: list[str], keys: tuple[str, ...] | None = None) -> dict:
    from farm.provenance.rights import RIGHTS_KEYS

    keys = keys or RIGHTS_KEYS
    rights = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or key not in keys:
            raise FarmError(f"--rights {item}", "is not KEY=VALUE with a known key", f"use one of {', '.join(keys)}")
        rights[key] = value
    return rights


class CampaignProgress:
    """Two bars while a campaign runs on Ray: shots finished, and frames rendered (with frames/s
    and ETA); a line per finished shot. The bars appear when the run starts (an error before it
    is one line, with no bars around it)."""

    def __enter__(self) -> CampaignProgress:
        self.progress = None
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def shots(self, total: int) -> None:
        self.progress = _progress()
        self.progress.start()
        self.shots_task = self.progress.add_task("shots", total=total)
        self.frames_task = self.progress.add_task("frames", total=0, unit="fr")

    def frames(self, added_total: int) -> None:
        task = self.progress.tasks[self.frames_task]
        self.progress.update(self.frames_task, total=(task.total or 0) + added_total)

    def frames_done(self, n: int) -> None:
        self.progress.advance(self.frames_task, n)

    def shot_state(self, position: int, state: str, windows_done: int = 0, windows: int | None = None) -> None:
        pass  # the bars say enough; campaign.json and `farm status` have every shot's state

    def shot_done(self, result, position: int | None = None) -> None:
        self.progress.advance(self.shots_task, 1)
        _say(result)

    def admission(self, bound: int, peak: int, driver: dict | None = None) -> None:
        pass  # campaign.json records it

    def node_blocked(self, node: str, entry: dict) -> None:
        console.print(f"[yellow]warning:[/yellow] node {escape(node[:12])} gets no more windows of this campaign: "
                      f"{entry['failures']} failed in a row there (last: {escape(entry['last_failure'])})")


def cmd_submit(args) -> int:
    """One campaign file, or every campaign file of a folder, by their `priority` (higher first), then
    in name order (a night's campaigns: one that cannot be read is reported and the others still
    run; exit status 2 then)."""
    from farm import api
    from farm.campaign import load_campaign

    folder = Path(args.campaign)
    if not folder.is_dir():
        return _submit(load_campaign(folder, name=args.name), args)
    if args.name:
        raise FarmError(f"--name {args.name!r}", "names one campaign, but a folder holds several (each has its own name)",
                        "leave out --name, or submit one campaign file")
    unreadable, failed, names, campaigns = False, False, {}, []
    for path in api.campaign_files(folder):
        try:
            campaign = load_campaign(path)
            if campaign.name in names:  # two files would write (and lease) the same OUT/<name>
                raise FarmError(str(path), f"names the campaign {campaign.name!r}, as {names[campaign.name]} does",
                                "give every campaign file of the folder its own name")
            names[campaign.name] = path.name
            campaigns.append(campaign)
        except FarmError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            unreadable = True
    for campaign in sorted(campaigns, key=lambda c: -c.priority):  # higher priority first, then by file name
        try:
            failed |= _submit(campaign, args) != 0
        except FarmError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            unreadable = True
    return 2 if unreadable else 3 if failed else 0


def _submit(campaign, args) -> int:
    """One loaded campaign (loaded before the progress bars: a bad file is one line of error)."""
    from farm import api

    if args.check:
        items = api.check(campaign, args.overrides, out=args.out)
        refused = api.refused(items)
        for shot, reason in refused.items():
            console.print(f"[yellow]warning:[/yellow] shot {escape(shot)}: {escape(reason)}")
        results.print(f"campaign {escape(campaign.name)}: {len(items) - len(refused)} shot(s) ready"
                      f"{f', {len(refused)} refused by the rights gate' if refused else ''}, nothing rendered")
        return 0
    with CampaignProgress() as progress:
        result = api.submit(campaign, args.out, overrides=args.overrides, force=args.force, progress=progress)
    _summary(result)
    if args.json:
        _json({**result.doc, "uri": result.uri, "report": result.report, "warnings": result.warnings})
    return 3 if result.counts["shots_failed"] else 0


def cmd_job(args) -> int:
    from farm import api

    if not args.address:
        raise FarmError("farm job --address", "no Ray job server given", "give --address http://HEAD:8265, or set FARM_RAY_JOBS")
    return api.job(args.campaign, args.out, args.address, job_id=args.id, overrides=args.overrides,
                   say=lambda line: results.print(escape(line)),
                   log=_job_log,
                   warn=lambda line: console.print(f"[red]error:[/red] {escape(line)}"))


def _job_log(text: str) -> None:
    """The job's own output, as it comes, with the diagnostics on stderr."""
    console.file.write(text)
    console.file.flush()


def cmd_requeue(args) -> int:
    from farm import api

    with CampaignProgress() as progress:
        result = api.requeue(args.campaign, failed=args.failed, flagged=args.flagged, shots=args.shot,
                             overrides=args.overrides, progress=progress)
    if result is None:
        results.print(f"nothing to requeue in {escape(str(args.campaign))}: no shot is "
                      + " or ".join(w for w, on in (("failed", args.failed), ("flagged", args.flagged)) if on))
        return 0
    _summary(result)
    if args.json:
        _json({**result.doc, "uri": result.uri, "report": result.report, "warnings": result.warnings})
    return 3 if result.counts["shots_failed"] else 0


def cmd_sweep(args) -> int:
    from farm import api

    plan = api.plan_sweep(args.campaign, args.overrides, name=args.name)
    console.print(f"sweep {escape(plan.name)}: {plan.shots} shot(s) x {plan.settings} setting(s) = {len(plan.items)} renders, one batch")
    with CampaignProgress() as progress:
        result = api.sweep(plan, out=args.out, force=args.force, progress=progress)
    _summary(result)
    _comparisons(result)
    return 3 if result.counts["shots_failed"] else 0


def _summary(result) -> None:
    """What a campaign run did, where its output and report are."""
    counts = result.counts
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    results.print(
        f"campaign {escape(result.name)}: {counts['shots_succeeded']} rendered, {counts['shots_reused']} already done, "
        f"{counts['shots_failed']} failed; windows rendered {counts['windows_rendered']}, reused {counts['windows_reused']}"
        f"{' (nothing to render)' if counts['windows_rendered'] == 0 and counts['shots_failed'] == 0 else ''}; "
        f"output in {escape(result.uri)}"
    )
    if counts["shots_flagged"]:
        results.print(f"[yellow]{counts['shots_flagged']} shot(s) need a re-render[/yellow] (QA thresholds, see the report)")
    results.print(_cost_line(counts))
    if result.report:
        results.print(f"report: {escape(result.report)}")


def _comparisons(result) -> None:
    """Per shot of a sweep: where its grid video is, and a table of its settings' metrics."""
    from rich.table import Table

    rows = {row["shot_id"]: row for row in result.doc["shots"]}
    for base, variants in result.groups.items():
        made = result.comparisons[base]
        if made.startswith("error: "):
            console.print(f"[yellow]warning:[/yellow] no comparison for {escape(base)}: {escape(made.removeprefix('error: '))}")
        else:
            results.print(f"comparison {escape(base)}: {escape(made)}")
        table = Table(title=f"{escape(base)}: metrics per setting")
        for column in ("setting", "state", "PCK", "OKS", "jitter", "drift", "seam", "QA"):
            table.add_column(column)
        for label, shot_id in variants:
            row = rows.get(shot_id, {})
            table.add_row(Text(label), row.get("status", ""), *(_num(row.get(k)) for k in
                          ("pose_pck", "pose_oks", "jitter", "appearance_drift", "seam_score")), _qa_word(row))
        results.print(table)


def _qa_word(row: dict) -> str:
    """A shot's QA state in one word: '' (failed), '-' (no QA record: rendered by an older farm)."""
    if row.get("status") == "failed":
        return ""
    if row.get("pose_source") is None and row.get("seam_score") is None:
        return "-"
    return "re-render" if row.get("needs_rerender") else "ok"


def _num(value) -> str:
    return "" if value is None else f"{value:.3g}"


def cmd_report(args) -> int:
    from farm import api

    made, report = api.rebuild_reports(args.campaign, overrides=args.overrides)
    for shot_id, uri in made.items():
        if uri is None:
            results.print(f"{escape(shot_id)}: no report (failed, or no QA record)")
        elif uri.startswith("error: "):
            console.print(f"[yellow]warning:[/yellow] {escape(shot_id)}: no report: {escape(uri.removeprefix('error: '))}")
        else:
            results.print(f"{escape(shot_id)}: {escape(uri)}")
    results.print(f"report: {escape(report)}")
    return 0


def cmd_verify(args) -> int:
    from farm import api

    result = api.verify(args.video, records=args.records, overrides=args.overrides)
    for line in result.lines():
        print(line)
    if result.ok:
        return 0
    console.print(f"[red]not verified:[/red] {escape(result.problem or '')}")
    return 4 if result.credentials is not None else 5


def cmd_status(args) -> int:
    from farm import api

    if args.watch:
        return _watch(args)
    doc = api.status(args.campaign, overrides=args.overrides)
    if args.json:
        _json(doc)
        return 0
    results.print(_status_view(doc, time.time()))
    return 0


def cmd_cancel(args) -> int:
    from farm import api

    if args.wait < 0:
        raise FarmError("farm cancel --wait", f"{args.wait:g} is not a number of seconds", "use e.g. --wait 120, or 0 not to wait")
    doc = api.cancel(args.campaign, overrides=args.overrides, wait=args.wait)
    if doc["status"] == "running":
        results.print(f"asked campaign {escape(str(doc['name']))} to stop; `farm status {escape(str(args.campaign))}` shows when it has")
    else:
        c = doc["counts"]
        results.print(f"campaign {escape(str(doc['name']))} {escape(str(doc['status']))}: {c['shots_done']}/{c['shots_total']} "
                      "shots done; `farm submit` of the campaign renders the rest (finished windows are kept)")
    return 0


def _watch(args) -> int:
    """Redraw the status of a campaign from its campaign.json (local or s3://, so from any machine)
    every `--interval` seconds while it runs; the last drawing stays on the terminal."""
    from rich.live import Live

    from farm import api

    if args.interval <= 0:
        raise FarmError("farm status --interval", f"{args.interval:g} is not a positive number of seconds", "use e.g. --interval 2")
    doc = api.status(args.campaign, overrides=args.overrides)
    try:
        with Live(_status_view(doc, time.time()), console=results, auto_refresh=False) as live:
            while doc["status"] == "running":
                time.sleep(args.interval)
                doc = api.status(args.campaign, overrides=args.overrides)
                live.update(_status_view(doc, time.time()), refresh=True)
    except KeyboardInterrupt:  # stops watching; the campaign goes on
        pass
    return 0


def _status_view(doc: dict, now: float):
    """A campaign record as a table of its shots and a summary: counts, windows, ETA and cost."""
    from rich.console import Group
    from rich.table import Table

    from farm.records import progress_of

    table = Table(title=f"campaign {escape(str(doc['name']))} ({escape(str(doc['status']))})")
    for column in ("shot", "state", "windows", "frames", "seconds", "GPU-s", "CPU-s", "QA", "error"):
        # Counts stay on one line in a narrow terminal; the QA reasons and errors wrap.
        table.add_column(column, no_wrap=column in ("state", "windows", "frames", "seconds", "GPU-s", "CPU-s"))
    for row in doc["shots"]:
        windows = f"{row['windows_rendered']} new + {row['windows_reused']} reused"
        if row.get("retakes"):
            windows += f", {row['retakes']} re-takes"
        qa = _qa_word(row)
        if qa == "re-render":
            qa = "needs re-render: " + "; ".join(row.get("qa_reasons") or [])
        table.add_row(*(Text(str(cell)) for cell in (row["shot_id"], row["status"], windows, row["frames"] or "", row["seconds"],
                                                      _num(row.get("gpu_seconds")), _num(row.get("cpu_seconds")), qa,
                                                      row["error"] or "")))
    for shot in doc.get("pending") or []:  # not done: what it was doing when the record was written
        windows = f"{shot['windows_done']}/{shot['windows']} rendered" if shot.get("windows") else ""
        table.add_row(*(Text(str(cell)) for cell in (shot["shot"], shot["state"], windows, "", "", "", "", "", "")))
    counts, progress = doc["counts"], progress_of(doc, now)
    lines = [
        f"{counts['shots_done']}/{counts['shots_total']} shots done: {counts['shots_succeeded']} rendered, "
        f"{counts['shots_reused']} reused, {counts['shots_failed']} failed, {counts.get('shots_flagged', 0)} need a re-render",
        f"windows {progress['windows_done']}/{'?' if progress['windows_total'] is None else progress['windows_total']}"
        + ("" if progress["eta_seconds"] is None else f", ETA {_clock(progress['eta_seconds'])}"),
    ]
    if "gpu_seconds" in counts:  # a record of an older farm has no cost
        lines.append(_cost_line(counts))
    for entry in doc.get("bad_nodes") or []:
        lines.append(f"bad node {entry['node'][:12]}: no more windows after {entry['failures']} failed in a row "
                     f"(last: {entry['last_failure']})")
    return Group(table, *(Text(line) for line in lines))


def _cost_line(counts: dict) -> str:
    """What the campaign's windows cost in this run; money only with the operator's prices."""
    money = "" if counts.get("money") is None else f", money {counts['money']:.4g}"
    return f"cost: {counts['gpu_seconds']:g} GPU-seconds, {counts['cpu_seconds']:g} CPU-seconds{money}"


def _clock(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def cmd_pose(args) -> int:
    from farm.config import load_config
    from farm.media.probe import probe_video
    from farm.pose.extract import extract_poses
    from farm.pose.preview import write_pose_preview
    from farm.pose.store import write_parquet
    from farm.shot.tools import cache_root, pose_options, storage_for
    from farm.shot.types import progress_callback

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
    results.print(f"poses: {escape(str(out / f'{stem}.parquet'))} ({len(poses)} frames); preview: {escape(str(out / f'{stem}_pose.mp4'))}")
    if args.openpose_json:
        from farm.pose.openpose import write_openpose_json

        files = write_openpose_json(poses, out / f"{stem}_openpose")
        results.print(f"OpenPose JSON: {len(files)} files in {escape(str(out / f'{stem}_openpose'))}")
    return 0


def cmd_library(args) -> int:
    from farm import api

    if args.library_command == "list":
        motions = api.library_list(args.out, overrides=args.overrides)
        if args.json:
            _json([motion.to_dict() for motion in motions])
            return 0
        if not motions:
            results.print(f"the motion library of {escape(str(args.out))} is empty: add a motion with farm library add VIDEO --name NAME")
            return 0
        from rich.table import Table

        table = Table(title=f"motion library of {escape(str(args.out))}")
        for column in ("name", "seconds", "frames", "size", "tags", "rights", "added"):
            table.add_column(column)
        for m in motions:
            rights = ", ".join(f"{k}={v}" for k, v in m.rights.items())
            table.add_row(Text(m.name), f"{m.duration_s:.1f}", str(m.frames), f"{m.width}x{m.height}", Text(", ".join(m.tags)),
                          Text(rights), m.added)
        results.print(table)
        return 0
    rights = _rights(args.rights, keys=("motion_source", "motion_consent", "consent", "license", "usage"))
    tags = tuple(t.strip() for t in args.tags.split(",") if t.strip())
    with _progress() as progress:
        motion = api.library_add(args.video, args.name, out=args.out, tags=tags, rights=rights, overrides=args.overrides,
                                 force=args.force, reporter=RichReporter(progress, args.name))
    if getattr(args, "json", False):
        _json(motion.to_dict())
    results.print(f"library:{escape(motion.name)}: {motion.frames} frames ({motion.duration_s:.1f} s), poses ready; "
                  f"stored in {escape(motion.video)}")
    return 0


def cmd_skeleton(args) -> int:
    from farm import api

    made = api.skeleton(args.image, mask=args.mask, out=args.out)
    results.print(f"skeleton ({made.source}): {escape(str(made.yaml))}; overlay: {escape(str(made.overlay))}")
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
        console.print(f"[red]error:[/red] {escape(str(result.error))} (record: {escape(Storage.join(result.uri, 'manifest.json'))})")
        return
    verb = "already rendered" if result.status == "reused" else "rendered"
    qa = result.manifest.get("qa") or {}
    flag = " [yellow](needs a re-render)[/yellow]" if qa.get("needs_rerender") else ""
    results.print(f"[green]{verb}[/green] {escape(str(result.video_uri))}{flag}")
    if report:
        for reason in qa.get("reasons") or []:
            results.print(f"  QA: {escape(reason)}")
        if result.manifest.get("report"):
            results.print(f"report: {escape(Storage.join(result.uri, result.manifest['report']))}")


def _shot_json(result) -> dict:
    """What `farm render --json` prints: where the shot's files are, its state and its QA."""
    from farm.storage import Storage

    manifest = result.manifest or {}
    metrics = {k: v for k, v in (manifest.get("metrics") or {}).items() if k != "windows"}
    return {
        "shot_id": result.shot_id, "status": result.status, "error": result.error, "uri": result.uri,
        "video": result.video_uri, "manifest": Storage.join(result.uri, "manifest.json"),
        "report": Storage.join(result.uri, manifest["report"]) if manifest.get("report") else None,
        "qa": manifest.get("qa"), "metrics": metrics,
    }


def _json(doc) -> None:
    sys.stdout.write(json.dumps(doc, default=str) + "\n")


def _report(result) -> int:
    _say(result, report=True)
    if result.status != "failed":
        return 0
    return 1 if "traceback" in result.manifest["error"] else 2


if __name__ == "__main__":
    sys.exit(main())
