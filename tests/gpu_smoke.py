"""`make gpu-smoke`: the tiny Wan-Animate model on CUDA in bf16, through the product's render path.

Builds the tiny pipeline of tests/wan_tiny.py, renders the shipped ASL clip onto the shipped drawing
in both match modes (3 windows each, parallel then chained), and prints what it measured: wall time
per render, frames per second inside the generator, peak GPU memory. Needs a CUDA GPU; nothing else
in the project depends on it.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str]) -> int:
    import torch

    from farm.config import load_config
    from farm.media.decode import read_frames
    from farm.shot.render import render_shot
    from tests.test_render import drawing_shot
    from tests.wan_tiny import save_tiny_wan

    device = "cpu" if "--cpu" in argv else "cuda"  # --cpu: the same run on the CPU in fp32, to check the script
    dtype = "fp32" if device == "cpu" else "bf16"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu-smoke: torch sees no CUDA GPU here; run it on a GPU machine (or pass --cpu)", file=sys.stderr)
        return 2
    memory = torch.cuda.max_memory_allocated if device == "cuda" else (lambda: 0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_wan(Path(tmp) / "tiny-wan")
        for match in ("image", "video"):
            for mode in ("parallel", "chained"):
                cfg = load_config([
                    "backend=wan_animate", f"backend.model={model}", f"backend.device={device}", f"backend.dtype={dtype}",
                    "backend.steps=4", "backend.resolution_area=65536", f"match={match}", f"window.mode={mode}",
                    "window.length=29", "window.overlap=1", "output.size=256", "output.pose_preview=false",
                ])
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                result = render_shot(drawing_shot("gesture_asl_please.mkv", "char1"), cfg, Path(tmp) / f"{match}-{mode}")
                wall = time.perf_counter() - started
                if result.status != "succeeded":
                    print(f"gpu-smoke: {match}/{mode} failed: {result.error}", file=sys.stderr)
                    return 1
                frames = len(read_frames(result.video))
                results.append({
                    "match": match, "mode": mode, "frames": frames, "windows": len(result.manifest["windows"]),
                    "wall_s": round(wall, 2), "generate_s": result.manifest["timings"]["generate"],
                    "generator_fps": round(frames / result.manifest["timings"]["generate"], 1),
                    "peak_gpu_mib": round(memory() / 2**20, 1), "model": result.manifest["model"],
                })
                print(json.dumps(results[-1]))
    where = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(f"gpu-smoke: {where}, torch {torch.__version__}: all {len(results)} renders succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
