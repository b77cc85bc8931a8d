"""`make bench`: speed figures against the project's targets, printed and written as JSON.

- puppet: frames/s of the puppet backend at a 512x512 output on ONE core (target >= 25);
- pose: pose-extraction frames/s on a 640x480 video with the default pose config (target >= 25).

Each figure runs in its own subprocess pinned to one core, so the numbers do not depend on how many
cores the machine has and the measurements do not disturb each other.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "jobs" / "media"
TARGETS = {"puppet_fps_512_one_core": 25.0, "pose_fps_640x480": 25.0}


def bench_puppet(frames: int = 192) -> dict:
    """Render the ASL clip's retargeted motion onto char1, padded to a square so the canvas is 512x512."""
    import numpy as np

    from farm.backends.base import WindowRequest
    from farm.backends.puppet import PuppetBackend
    from farm.character import load_character
    from farm.pose.extract import extract_poses
    from farm.pose.retarget import limb_layers, retarget

    character, _ = load_character(
        MEDIA / "childdrawing_char1.png",
        skeleton_path=MEDIA / "childdrawing_char1_skeleton.yaml",
        mask_path=MEDIA / "childdrawing_char1_mask.png",
    )
    character = _pad_square(character)
    side = character.image.shape[0]
    poses = extract_poses(MEDIA / "gesture_asl_please.mkv")
    moved = retarget(
        poses.rig(), (poses.width, poses.height), character.joints, (side, side),
        mode="image", motion_weight=1.0, anchor="auto", output_size=512,
    )
    layers, behind = limb_layers(poses.body)
    index = np.arange(frames) % len(poses)
    backend = PuppetBackend()
    started = time.perf_counter()
    backend.prepare(character, moved.canvas)
    prepare_s = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, frames, 48):
        window = index[start : start + 48]
        backend.render_window(
            WindowRequest(
                shot_id="bench", start=start, end=start + len(window), targets=moved.targets[window], layers=layers[window],
                options={"limbs_behind_torso": behind[window]},
            )
        )
    seconds = time.perf_counter() - started
    return {
        "size": [moved.canvas.width, moved.canvas.height],
        "frames": frames,
        "prepare_s": round(prepare_s, 3),
        "render_s": round(seconds, 3),
        "fps": round(frames / seconds, 2),
    }


def _pad_square(character):
    import numpy as np

    from farm.backends.base import Character

    h, w = character.image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    image = np.full((side, side, 3), 255, np.uint8)
    image[top : top + h, left : left + w] = character.image
    mask = np.zeros((side, side), bool)
    mask[top : top + h, left : left + w] = character.mask
    joints = character.joints.copy()
    joints[:, :2] += [left, top]
    return Character(image=image, mask=mask, joints=joints, source=character.source, sha256=character.sha256 + "-square")


def bench_pose() -> dict:
    """Pose extraction on the 640x480 ASL clip with the default pose config (model load included)."""
    from farm.config import load_config
    from farm.pose.extract import extract_poses
    from farm.render import pose_options

    video = MEDIA / "gesture_asl_book.mkv"
    options = pose_options(load_config())
    started = time.perf_counter()
    poses = extract_poses(video, options=options)
    seconds = time.perf_counter() - started
    return {
        "video": video.name,
        "size": [poses.width, poses.height],
        "frames": len(poses),
        "seconds": round(seconds, 3),
        "fps": round(len(poses) / seconds, 2),
        "hands": options.hands,
        "face": options.face,
    }


def _run_pinned(name: str) -> dict:
    """Run one benchmark in a fresh interpreter limited to one core and one thread per library."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = (
        "import os, json, cv2; os.sched_setaffinity(0, {0}); cv2.setNumThreads(1); "
        f"from farm.bench import bench_{name}; print('RESULT ' + json.dumps(bench_{name}()))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench-results/bench.json")
    args = parser.parse_args(argv)
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.processor()},
        "puppet": _run_pinned("puppet"),
        "pose": _run_pinned("pose"),
    }
    results["targets"] = {
        "puppet_fps_512_one_core": {"target": TARGETS["puppet_fps_512_one_core"], "measured": results["puppet"]["fps"]},
        "pose_fps_640x480": {"target": TARGETS["pose_fps_640x480"], "measured": results["pose"]["fps"]},
    }
    for item in results["targets"].values():
        item["met"] = item["measured"] >= item["target"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for name, item in results["targets"].items():
        print(f"{name:28s} {item['measured']:8.2f}  (target >= {item['target']}, {'met' if item['met'] else 'NOT met'})")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
