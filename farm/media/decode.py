"""Decode a range of a video's frames as RGB arrays, streaming.

Frame i is the i-th frame of a full decode (presentation order, counting from 0). A range that starts
past the first keyframe seeks to the last keyframe at or before it, so reading frames 1000..1009
decodes one group of pictures, not the thousand frames before it. Frames come upright: a phone clip
stored sideways is turned as its display matrix says (probe_video's width and height are the
turned ones).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import av
import numpy as np

from farm.errors import MediaError
from farm.media.probe import VIDEO_FIX, demux_video_packets, open_video, upright


@dataclass(frozen=True)
class _Timeline:
    """Where a video's frames lie, read by demuxing only.

    pts: presentation timestamp of each frame, in presentation order (None where the container
    gives none). keyframes: (pts, seek timestamp) of each keyframe, in decode order.
    width, height: the stream's picture size.
    """

    pts: list[int | None]
    keyframes: list[tuple[int, int]]
    width: int
    height: int


def iter_frames(path: str | Path, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Yield frames start..stop-1 (stop None: to the end) as (H, W, 3) uint8 RGB arrays, one at a time.

    Raises MediaError for an unreadable file or a range past the end of the video, before the
    first frame is decoded.
    """
    path = Path(path)
    timeline = _read_timeline(path)
    stop = _checked_stop(path, start, stop, len(timeline.pts))
    return _decode_range(path, timeline, start, stop)


def read_frames(path: str | Path, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Frames start..stop-1 as one (n, H, W, 3) uint8 RGB array."""
    path = Path(path)
    timeline = _read_timeline(path)
    stop = _checked_stop(path, start, stop, len(timeline.pts))
    frames = None
    for i, frame in enumerate(_decode_range(path, timeline, start, stop)):
        if frames is None:  # the first frame's shape: the stored size, turned upright
            frames = np.empty((stop - start, *frame.shape), dtype=np.uint8)
        frames[i] = frame
    return frames if frames is not None else np.empty((0, timeline.height, timeline.width, 3), dtype=np.uint8)


def _read_timeline(path: Path) -> _Timeline:
    with open_video(path) as (container, stream):
        pts: list[int | None] = []
        keyframes: list[tuple[int, int]] = []
        for packet in demux_video_packets(path, container, stream):
            if packet.is_keyframe and packet.pts is not None:
                # Seeking to the smaller of pts and dts lands on this keyframe or an earlier one,
                # whichever of the two the container indexes by.
                dts = packet.pts if packet.dts is None else packet.dts
                keyframes.append((packet.pts, min(packet.pts, dts)))
            pts.append(packet.pts)
        if not pts:
            raise MediaError(path, "has a video stream with no frames", VIDEO_FIX)
        if None not in pts:
            pts.sort()
        return _Timeline(pts=pts, keyframes=keyframes, width=stream.width, height=stream.height)


def _checked_stop(path: Path, start: int, stop: int | None, frame_count: int) -> int:
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"frame range {start}..{stop} is not a range: give 0 <= start <= stop")
    if max(start, stop or 0) > frame_count:
        asked = f"frames from {start} on" if stop is None else f"frames {start} to {stop - 1}"
        raise MediaError(path, f"has {frame_count} frames, too few for {asked}", f"ask for frames below {frame_count}")
    return frame_count if stop is None else stop


def _seek_timestamp(timeline: _Timeline, start: int) -> int | None:
    """Timestamp to seek to so decoding starts at the last keyframe at or before frame `start`,
    or None to decode from the first frame (start is in the first group of pictures, or the
    container's timestamps cannot place frames)."""
    pts = timeline.pts
    if start == 0 or None in pts or len(set(pts)) != len(pts):
        return None
    before = [seek for key_pts, seek in timeline.keyframes if key_pts <= pts[start]]
    if len(before) < 2:
        return None
    return before[-1]


def _decode_range(path: Path, timeline: _Timeline, start: int, stop: int) -> Iterator[np.ndarray]:
    if start == stop:
        return
    seek_to = _seek_timestamp(timeline, start)
    with open_video(path) as (container, stream):
        stream.thread_type = "AUTO"
        frames = _decoded_frames(path, container, stream, seek_to)
        if seek_to is None:
            frames = islice(frames, start, None)
        else:
            # Decoding from the keyframe also yields the frames between it and `start`; open-GOP
            # leading pictures may come out first, shown before the keyframe.
            first = timeline.pts[start]
            frames = (frame for frame in frames if frame.pts is None or frame.pts >= first)

        yielded = 0
        for index, frame in zip(range(start, stop), frames):
            if seek_to is not None and frame.pts != timeline.pts[index]:
                raise MediaError(path, f"frame {index} did not decode where its index places it", VIDEO_FIX)
            rgb = frame.to_ndarray(format="rgb24", width=timeline.width, height=timeline.height)
            yield np.ascontiguousarray(upright(rgb, frame.rotation))
            yielded += 1
        if yielded < stop - start:
            problem = f"stops decoding at frame {start + yielded} of the {len(timeline.pts)} it holds; it is damaged"
            raise MediaError(path, problem, VIDEO_FIX)


def _decoded_frames(path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    seek_to: int | None) -> Iterator[av.VideoFrame]:
    try:
        if seek_to is not None:
            container.seek(seek_to, stream=stream)
        yield from container.decode(stream)
    except av.FFmpegError as error:
        raise MediaError(path, f"not a readable video: {error.strerror}", VIDEO_FIX) from error


def iter_luma(path: str | Path) -> Iterator[np.ndarray]:
    """Yield every frame's luma as an (H, W) float64 array on the full 0..255 scale: the Y plane as
    coded (no trip through RGB, whose conversion matrix a decoder may choose differently from the
    encoder), stretched from limited range when the stream is limited range. 8-bit 4:2:0 is read
    directly; other formats are converted to it first."""
    path = Path(path)
    with open_video(path) as (container, stream):
        stream.thread_type = "AUTO"
        for frame in _decoded_frames(path, container, stream, None):
            # A full-range stream (yuvj*, or color_range 2 = JPEG) keeps 0..255.
            full = frame.format.name.startswith("yuvj") or int(frame.color_range or 0) == 2
            if frame.format.name not in ("yuv420p", "yuvj420p"):
                frame = frame.reformat(format="yuv420p")
            plane = frame.planes[0]
            y = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, : frame.width]
            y = upright(np.ascontiguousarray(y), frame.rotation).astype(np.float64)
            yield y if full else (y - 16.0) * (255.0 / 219.0)
