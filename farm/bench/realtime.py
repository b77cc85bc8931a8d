"""`python -m farm.bench.realtime` (part of `make bench`): is a laptop render as fast as the clip plays?

`farm render MOTION CHARACTER` with the puppet (the bundled child drawing, 512 px output, every
artifact a user gets: video, manifest, poses, preview, report), run as a user runs it, in a fresh
process on all the machine's cores, on three clips:

- short: the bundled ASL "please" clip (2.4 s, 640x480, 30 fps);
- 30s: the two bundled ASL clips played one after the other until 30 s (640x480, 30 fps), made
  here once (bench-results/clips/);
- 2min: ../shared/data's 139 s walk (768x432, 10 fps), where that folder is present.

For each: wall / clip duration (target <= 1.0, median of `--runs`), the peak RSS of the command
(target <= 500 MB for the 2-minute clip), and the stage timings of its manifest. `--path staged`
and `--path streaming` run the shot's stages one after the other over the whole clip, or overlapped
(runtime.stream, farm.shot.render): both are measured, side by side.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
MEDIA = REPO / "jobs" / "media"
SHARED = REPO.parent / "shared" / "data"
CHARACTER = [str(MEDIA / "childdrawing_char1.png"), "--character-skeleton", str(MEDIA / "childdrawing_char1_skeleton.yaml"),
             "--character-mask", str(MEDIA / "childdrawing_char1_mask.png")]
TARGET_RATIO, TARGET_RSS_MB = 1.0, 500.0
PATHS = {"staged": "runtime.stream=false", "streaming": "runtime.stream=true"}

# The child's peak RSS (kB on Linux): this wrapper runs the command and reports getrusage of it alone.
_MEASURE = (
    "import json, resource, subprocess, sys, time; t = time.perf_counter(); "
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); "
    "wall = time.perf_counter() - t; "
    "print(json.dumps({'rc': rc.returncode, 'wall_s': wall, 'rss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "'stderr': rc.stderr[-3000:]}))"
)


def clips(folder: Path) -> dict[str, Path]:
    """The clips the benchmark renders (the 30 s one made into `folder` when missing)."""
    found = {"short": MEDIA / "gesture_asl_please.mkv", "30s": thirty_seconds(folder / "asl_30s.mp4")}
    if (SHARED / "long_people_walk_in_one_by_one.mp4").is_file():
        found["2min"] = SHARED / "long_people_walk_in_one_by_one.mp4"
    return found


def thirty_seconds(path: Path, seconds: float = 30.0) -> Path:
    """The bundled ASL clips, one after the other, until `seconds` of 30 fps video: a real
    performer, the length of a typical ad clip."""
    if path.is_file():
        return path
    from farm.media.decode import iter_frames
    from farm.media.encode import VideoWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    total, written = round(seconds * 30), 0
    with VideoWriter(path, fps=30, width=640, height=480, crf=18) as writer:
        while written < total:
            for name in ("gesture_asl_please.mkv", "gesture_asl_book.mkv"):
                for frame in iter_frames(MEDIA / name):
                    if written == total:
                        break
                    writer.write(frame)
                    written += 1
    return path


def duration(video: Path) -> float:
    from farm.media.probe import probe_video

    probe = probe_video(video)
    return probe.frame_count / float(Fraction(probe.fps_fraction))


def render_once(video: Path, path: str, out: Path) -> dict:
    """One `farm render` of `video` in a fresh process: wall, peak RSS, the manifest's timings."""
    command = [str(Path(sys.executable).with_name("farm")), "render", str(video), *CHARACTER, "-o", str(out), "--id", "bench",
               "--force", "--json", PATHS[path]]
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"the measuring wrapper failed:\n{done.stderr[-3000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    if run["rc"] != 0:
        raise RuntimeError(f"farm render {video.name} ({path}) exited {run['rc']}:\n{run['stderr']}")
    manifest = json.loads((out / "bench" / "manifest.json").read_text())
    return {"wall_s": round(run["wall_s"], 2), "peak_rss_mb": round(run["rss_kb"] / 1024, 1),
            "timings": manifest["timings"], "status": manifest["status"]}


def bench_clip(name: str, video: Path, path: str, runs: int) -> dict:
    seconds = duration(video)
    measured = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            measured.append(render_once(video, path, Path(out)))
    walls = [m["wall_s"] for m in measured]
    wall = statistics.median(walls)
    return {
        "clip": name, "video": video.name, "path": path, "clip_s": round(seconds, 2), "walls_s": walls,
        "wall_s": wall, "ratio": round(wall / seconds, 3), "peak_rss_mb": max(m["peak_rss_mb"] for m in measured),
        "timings": measured[walls.index(wall)]["timings"],
    }


def bench_realtime(runs: int = 3, paths: tuple[str, ...] = ("staged", "streaming"), only: tuple[str, ...] = ()) -> dict:
    folder = REPO / "bench-results" / "clips"
    results = []
    for name, video in clips(folder).items():
        if only and name not in only:
            continue
        for path in paths:
            result = bench_clip(name, video, path, runs)
            results.append(result)
            print(f"{name:6s} {path:9s} {result['clip_s']:7.1f} s clip  wall {result['wall_s']:7.2f} s  "
                  f"ratio {result['ratio']:5.2f} (target <= {TARGET_RATIO})  peak RSS {result['peak_rss_mb']:7.1f} MB", flush=True)
    return {"runs": runs, "target_ratio": TARGET_RATIO, "target_rss_mb_2min": TARGET_RSS_MB, "renders": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/bench-realtime.json")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--path", action="append", choices=sorted(PATHS), help="staged, streaming (default both)")
    parser.add_argument("--clip", action="append", choices=["short", "30s", "2min"], help="default all")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = bench_realtime(args.runs, tuple(args.path or ("staged", "streaming")), tuple(args.clip or ()))
    results["bench_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
