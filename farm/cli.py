"""`farm` command line: render one shot, extract poses, run a campaign, show the config.

Exit status: 0 all good; 2 bad input or configuration (one line on stderr, no traceback);
1 an internal error; 3 a campaign in which some shots failed.
"""
from __future__ import annotations

import argparse
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
        self.task = self.progress.add_task(f"{self.label} {name}", total=total)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)


class _FramesPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:5.1f} fr/s" if task.speed else "")


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
    render.add_argument("-o", "--out", default="out", help="output folder (default ./out); the shot goes to OUT/<shot_id>/")
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

    submit = sub.add_parser("submit", help="render every shot of a campaign file")
    submit.add_argument("campaign", help="campaign YAML (see jobs/demo.yaml)")
    submit.add_argument("-o", "--out", default="out", help="output folder (default ./out); shots go to OUT/<campaign>/shots/")
    submit.add_argument("--force", action="store_true", help="render again shots that are already finished")
    submit.add_argument("overrides", nargs="*", help="config overrides applied to every shot")

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


def main(argv: list[str] | None = None) -> int:
    _quiet_native_logs()
    parser = _parser()
    # Overrides may come before or after options (`farm render a.mp4 b.png match=video -o out`).
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return {"render": cmd_render, "pose": cmd_pose, "submit": cmd_submit, "config": cmd_config}[args.command](args)
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
        motion=Path(args.motion), character=Path(args.character),
        skeleton=Path(args.character_skeleton) if args.character_skeleton else None,
        mask=Path(args.character_mask) if args.character_mask else None,
        prompt=args.prompt, shot_id=args.id,
    )
    with _progress() as progress:
        result = render_shot(shot, cfg, Path(args.out), reporter=RichReporter(progress, "shot"), force=args.force)
    return _report(result)


def cmd_submit(args) -> int:
    from farm.campaign import load_campaign
    from farm.config import load_config
    from farm.render import record_failure, render_shot

    campaign = load_campaign(args.campaign)
    root = Path(args.out) / campaign.name / "shots"
    results = []
    with _progress() as progress:
        for item in campaign.shots:
            label = item.shot.shot_id or item.shot.motion.name
            try:
                cfg = load_config([*campaign.defaults, *item.overrides, *args.overrides])
            except FarmError as exc:
                result = record_failure(item.shot, None, root, exc)
            else:
                result = render_shot(item.shot, cfg, root, reporter=RichReporter(progress, label), force=args.force)
            results.append(result)
            _say(result)
    failed = sum(1 for r in results if r.status == "failed")
    console.print(f"campaign {campaign.name}: {len(results) - failed} of {len(results)} shots done, {failed} failed; output in {root}")
    return 3 if failed else 0


def cmd_pose(args) -> int:
    from farm.config import load_config
    from farm.media.probe import probe_video
    from farm.pose.extract import extract_poses
    from farm.pose.preview import write_pose_preview
    from farm.pose.store import write_parquet
    from farm.render import check_root, pose_options, progress_callback

    cfg = load_config(args.overrides)
    check_root(Path(args.video), cfg, "video")
    probe = probe_video(args.video, max_side=cfg.qa.max_side, max_duration_s=cfg.qa.max_video_seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with _progress() as progress:
        reporter = RichReporter(progress, Path(args.video).name)
        reporter.stage("pose", probe.frame_count)
        poses = extract_poses(args.video, options=pose_options(cfg), progress=progress_callback(reporter))
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


def _say(result) -> None:
    if result.status == "failed":
        console.print(f"[red]error:[/red] {result.error} (record: {result.folder / 'manifest.json'})")
    else:
        verb = "already rendered" if result.status == "reused" else "rendered"
        console.print(f"[green]{verb}[/green] {result.folder / 'video.mp4'}")


def _report(result) -> int:
    _say(result)
    if result.status != "failed":
        return 0
    return 1 if "traceback" in result.manifest["error"] else 2


if __name__ == "__main__":
    sys.exit(main())
