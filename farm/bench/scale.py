"""`make bench-scale`: the farm at campaign scale on a simulated GPU farm (issue 13), printed and
written as JSON (bench-results/bench-scale.json).

- scale: a synthetic campaign built here from ../shared/data: 5 motions (each cut to its first
  `--frames` frames) x 10 characters (the two drawings with skeleton files, each in 5 hues) x
  `--variants` takes x 2 settings (match=image, match=video): 1000 shots with the default 10
  variants. Backend `simulated` on 16 fake GPUs (runtime.num_gpus=16) with
  backend.seconds_per_frame chosen so GPU work dominates, as on a real farm. Reported: the GPU
  busy fraction between the first window start and the last window end (target >= 0.95), makespan
  over ideal (the campaign's wall over total simulated GPU seconds / 16, target <= 1.08), the
  driver's own event time per window (target <= 5 ms median), poses extracted vs reused (target:
  5 extracted), and the campaign page (size, headless Chromium load time).
- driver memory: the driver's peak RSS for the scale campaign vs one of 50 shots (target <= 1.3).
- library: the 40-shot, one-motion campaign of the issue (the ASL "please" clip onto the crown
  drawing, seeds 0-39, puppet backend) without and with the motion library (target >= 2.5x
  faster), then again (0 windows rendered, wall <= 5% of the first run).
- pose: the puppet's body-only pose extraction against bare mediapipe Pose (farm.bench).

Every run starts its own Ray cluster in a fresh interpreter (2 CPUs). One thing is turned off, the
pose preview (output.pose_preview=false: a video per shot that no capacity figure needs, about
10 ms of CPU a frame); otherwise each shot is planned, rendered, stitched, encoded, measured (QA)
and reported as in production;
the clips are short and the output small (output.size=128) so the CPU work of 1000 shots fits a
2-core machine under 16 simulated GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
MEDIA = REPO / "jobs" / "media"
SHARED = REPO.parent / "shared" / "data"
MOTIONS = ("dance_fullbody_outdoor.mp4", "juggle_fullbody_outdoor.mp4", "talk_upperbody_gesture_tvhost.mp4",
           "fast_basketball_dribble.mp4", "turnaround_fullbody_fashion.mp4")
DRAWINGS = (("childdrawing_char1.png", "childdrawing_char1_skeleton.yaml", "childdrawing_char1_mask.png"),
            ("childdrawing_char3_candycorn.png", "childdrawing_char3_skeleton.yaml", "childdrawing_char3_candycorn_mask.png"))
HUES = (0, 36, 72, 108, 144)  # OpenCV hue turns (of 180): five characters from each drawing
SETTINGS = ("match=image", "match=video")
GPUS = 16
TARGETS = {
    "gpu_busy_fraction": (">=", 0.95),
    "makespan_over_ideal": ("<=", 1.08),
    "driver_rss_ratio": ("<=", 1.3),
    "driver_ms_per_window_median": ("<=", 5.0),
    "poses_extracted": ("==", 5),
    "library_speedup_40_shots": (">=", 2.5),
    "rerun_wall_share": ("<=", 0.05),
    "pose_body_vs_bare_mediapipe": (">=", 0.85),
}


def build_media(folder: Path, frames: int) -> tuple[list[Path], list[tuple[Path, Path, Path]]]:
    """The campaign's motions (the shared clips cut to `frames` frames, at most 640 px) and characters."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    motions = [_cut(SHARED / name, folder / f"{Path(name).stem}_{frames}f.mp4", frames) for name in MOTIONS]
    characters = []
    for image, skeleton, mask in DRAWINGS:
        picture = cv2.imread(str(MEDIA / image), cv2.IMREAD_UNCHANGED)
        for hue in HUES:
            turned = picture.copy()
            hsv = cv2.cvtColor(picture[..., :3], cv2.COLOR_BGR2HSV)
            hsv[..., 0] = (hsv[..., 0].astype(int) + hue) % 180
            turned[..., :3] = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
            path = folder / f"{Path(image).stem}_hue{hue}.png"
            cv2.imwrite(str(path), turned)
            characters.append((path, MEDIA / skeleton, MEDIA / mask))
    return motions, characters


def _cut(source: Path, target: Path, frames: int) -> Path:
    """The first `frames` frames of a video, at most 640 px on the longer side, as H.264."""
    import av

    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        scale = min(1.0, 640 / max(stream.width, stream.height))
        width, height = (round(stream.width * scale / 2) * 2, round(stream.height * scale / 2) * 2)
        with av.open(str(target), "w") as out:
            video = out.add_stream("libx264", rate=stream.average_rate)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            for n, frame in enumerate(src.decode(stream)):
                if n == frames:
                    break
                for packet in video.encode(frame.reformat(width, height, "yuv420p")):
                    out.mux(packet)
            for packet in video.encode():
                out.mux(packet)
    return target


def campaign_file(folder: Path, name: str, motions: list[Path], characters: list, variants: int) -> Path:
    """motions x characters x 2 settings entries, each with `variants` takes."""
    lines = [f"name: {name}", "defaults: [output.size=128, output.pose_preview=false]", "shots:"]
    for motion in motions:
        for image, skeleton, mask in characters:
            for setting in SETTINGS:
                lines.append(f"  - {{motion: {motion}, character: {image}, skeleton: {skeleton}, mask: {mask}, "
                             f"overrides: [{setting}], variants: {variants}}}")
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


SUBMIT = """
import json, resource, sys, time
from farm import api
campaign, out, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
started = time.perf_counter()
result = api.submit(campaign, out, overrides=overrides)
print(json.dumps({"wall_s": time.perf_counter() - started, "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "counts": result.counts, "admission": result.doc.get("admission"), "uri": result.uri, "report": result.report}))
"""


def submit(campaign: Path, out: Path, seconds_per_frame: float) -> dict:
    """`farm submit` of the campaign with the simulated backend on 16 fake GPUs, in a fresh interpreter."""
    overrides = ["backend=simulated", f"backend.seconds_per_frame={seconds_per_frame}", "backend.load_seconds=2",
                 f"runtime.num_gpus={GPUS}", "runtime.num_cpus=2"]
    return _run([sys.executable, "-c", SUBMIT, str(campaign), str(out), *overrides])


def gpu_figures(campaign_uri: str, wall_s: float) -> dict:
    """From the shots' window logs: the GPUs' busy fraction between the first window start and the
    last window end, and the campaign's wall over the ideal (total GPU seconds / GPUS)."""
    windows = []
    for manifest in Path(campaign_uri, "shots").glob("*/manifest.json"):
        doc = json.loads(manifest.read_text())
        windows += [(w["started"], w["seconds"]) for w in doc.get("windows", []) if not w.get("reused")]
    first = min(start for start, _ in windows)
    last = max(start + seconds for start, seconds in windows)
    busy = sum(seconds for _, seconds in windows)
    return {"windows": len(windows), "gpu_seconds": round(busy, 1), "window_span_s": round(last - first, 1),
            "gpu_busy_fraction": round(busy / (GPUS * (last - first)), 4),
            "makespan_over_ideal": round(wall_s / (busy / GPUS), 4)}


LIBRARY_RUN = """
import json, sys, time
from farm.config import load_config
from farm.runtime.campaign import run_campaign
from farm.runtime.cluster import connect
from farm.shot.types import Shot
media, out, library = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None
connect(num_cpus=2)
items = [(Shot(motion=f"{media}/gesture_asl_please.mkv", character=f"{media}/childdrawing_char1.png",
               skeleton=f"{media}/childdrawing_char1_skeleton.yaml", mask=f"{media}/childdrawing_char1_mask.png", shot_id=f"please-{seed}"),
          load_config(["output.size=256", "output.pose_preview=false", f"seed={seed}"])) for seed in range(40)]
started = time.perf_counter()
results = run_campaign(items, out, library=library)
rendered = sum(1 for r in results if r.status == "succeeded" for w in r.manifest["windows"] if not w.get("reused"))
print(json.dumps({"wall_s": time.perf_counter() - started, "statuses": sorted({r.status for r in results}), "windows_rendered": rendered}))
"""


def bench_library(work: Path) -> dict:
    """The 40-shot one-motion campaign without the motion library, with it, and with it again."""
    before = _run([sys.executable, "-c", LIBRARY_RUN, str(MEDIA), str(work / "before")])
    after = _run([sys.executable, "-c", LIBRARY_RUN, str(MEDIA), str(work / "after"), str(work / "library")])
    again = _run([sys.executable, "-c", LIBRARY_RUN, str(MEDIA), str(work / "after"), str(work / "library")])
    return {"without_library": before, "with_library": after, "again": again,
            "library_speedup_40_shots": round(before["wall_s"] / after["wall_s"], 2),
            "rerun_wall_share": round(again["wall_s"] / after["wall_s"], 3)}


def _run(command: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark run failed: {done.stderr[-3000:]}")
    # The run's result is its last JSON line: Ray's raylet may print warnings to the driver's
    # stdout after it (e.g. "N PYTHON worker processes have been started").
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"benchmark run printed no result: {done.stdout[-3000:]}")


def _verdicts(figures: dict) -> dict:
    verdicts = {}
    for key, (sense, target) in TARGETS.items():
        value = figures.get(key)
        if value is None:
            continue
        ok = value >= target if sense == ">=" else value <= target if sense == "<=" else value == target
        verdicts[key] = {"value": value, "target": f"{sense} {target}", "met": bool(ok)}
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/bench-scale.json")
    parser.add_argument("--variants", type=int, default=10, help="takes per (motion, character, setting): 10 makes 1000 shots")
    parser.add_argument("--frames", type=int, default=48, help="frames each motion is cut to")
    parser.add_argument("--seconds-per-frame", type=float, default=0.5,
                        help="the simulated GPU's time per frame; GPU work must dominate the 2 cores' work")
    parser.add_argument("--skip", action="append", default=[], choices=["scale", "driver", "library", "pose"])
    args = parser.parse_args(argv)
    from farm.bench import page_load_seconds
    from farm.report import PAGE_ROWS

    if not SHARED.is_dir():
        print(f"bench-scale needs the shared media in {SHARED}")
        return 2
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "gpus": GPUS}
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="farm-bench-scale-") as scratch:
        work = Path(scratch)
        motions, characters = build_media(work / "media", args.frames)
        if "scale" not in args.skip:
            campaign = campaign_file(work, "scale", motions, characters, args.variants)
            run = submit(campaign, work / "out", args.seconds_per_frame)
            shots = len(motions) * len(characters) * len(SETTINGS) * args.variants
            gpu = gpu_figures(run["uri"], run["wall_s"])
            driver = (run["admission"] or {}).get("driver") or {}
            page = Path(run["report"]) if run["report"] else None
            results["scale"] = {"shots": shots, "frames_per_motion": args.frames, "seconds_per_frame": args.seconds_per_frame,
                                **run, **gpu, "report_bytes": page.stat().st_size if page else None,
                                "report_load_s": [round(t, 3) for t in page_load_seconds(page, min(PAGE_ROWS, shots))] if page else None}
            figures.update(gpu_busy_fraction=gpu["gpu_busy_fraction"], makespan_over_ideal=gpu["makespan_over_ideal"],
                           poses_extracted=run["counts"]["poses_extracted"],
                           driver_ms_per_window_median=driver.get("median_ms"))
            print(json.dumps({"scale": results["scale"]}, indent=1), flush=True)
            if "driver" not in args.skip:
                small = campaign_file(work, "small", motions, characters[:5], 1)  # 5 x 5 x 2 = 50 shots
                run50 = submit(small, work / "out", args.seconds_per_frame)
                results["driver"] = {"peak_rss_mb_50": round(run50["driver_peak_rss_mb"], 1),
                                     f"peak_rss_mb_{shots}": round(run["driver_peak_rss_mb"], 1)}
                figures["driver_rss_ratio"] = round(run["driver_peak_rss_mb"] / run50["driver_peak_rss_mb"], 3)
                print(json.dumps({"driver": results["driver"]}), flush=True)
        if "library" not in args.skip:
            results["library"] = bench_library(work)
            figures.update(library_speedup_40_shots=results["library"]["library_speedup_40_shots"],
                           rerun_wall_share=results["library"]["rerun_wall_share"])
            print(json.dumps({"library": results["library"]}, indent=1), flush=True)
    if "pose" not in args.skip:
        from farm.bench import _run_pinned

        results["pose_parts"] = _run_pinned("pose_parts")
        figures["pose_body_vs_bare_mediapipe"] = results["pose_parts"].get("ratio")
    results["targets"] = _verdicts(figures)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    for key, verdict in results["targets"].items():
        print(f"{key}: {verdict['value']} (target {verdict['target']}) {'met' if verdict['met'] else 'NOT met'}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
