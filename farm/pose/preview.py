"""Pose-map preview videos in OpenPose colours (what ComfyUI users inspect)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from farm.pose.draw import draw_pose_frame, draw_rig_frame
from farm.pose.extract import PoseSequence

# Flat colours on black: "superfast" keeps them as drawn in about two thirds of the time of
# "veryfast" (the file about twice the size: 0.7 MB for 30 s), and the preview is written beside
# the render on the same cores.
PRESET = "superfast"


def write_pose_preview(
    path: Path,
    driving: PoseSequence,
    fps: Fraction | float,
    *,
    index: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    canvas_size: tuple[int, int] | None = None,
    max_height: int = 720,
) -> None:
    """The performer's pose (body, hands, face) per output frame; with `targets` ((T, 15, 3) on a
    canvas of `canvas_size` (w, h)), the retargeted pose side by side on the right.

    index: source frame shown at each output frame (default: every frame once).
    """
    from farm.media.encode import VideoWriter

    index = np.arange(len(driving)) if index is None else index
    height = canvas_size[1] if canvas_size else min(max_height, driving.height) // 2 * 2
    left_width = max(2, int(round(driving.width * height / driving.height / 2)) * 2)
    width = left_width + (canvas_size[0] if canvas_size else 0)
    # One encoder thread: the same preview bytes on every machine, and the render's other stages
    # (which run beside it, farm.shot.render) keep their cores.
    # The performer is drawn at the preview's size (the points scaled, the lines as thick as
    # draw_pose_frame makes them for that size), not at the video's and shrunk: a 4K source would
    # otherwise cost a 4K drawing a frame.
    scale = np.array([left_width / driving.width, height / driving.height], np.float32)
    with VideoWriter(path, fps=fps, width=width, height=height, crf=23, preset=PRESET, threads=1) as writer:
        for t, src in enumerate(index):
            frame = draw_pose_frame(left_width, height, *(_scaled(points[src], scale) for points in
                                                          (driving.body, driving.left_hand, driving.right_hand, driving.face)))
            if targets is not None:
                # Every target joint is drawn, also those held at the character's rest pose.
                shown = np.concatenate([targets[t, :, :2], np.ones((len(targets[t]), 1), np.float32)], axis=1)
                frame = np.concatenate([frame, draw_rig_frame(canvas_size[0], height, shown)], axis=1)
            writer.write(frame)


def _scaled(points: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(N, >=3) points x, y, ... with x and y scaled by scale (2,); the other columns (depth, confidence) kept."""
    out = np.array(points, np.float32, copy=True)
    out[:, :2] *= scale
    return out
