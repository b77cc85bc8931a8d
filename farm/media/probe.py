"""What an input file holds (size, frame rate, exact frame count, audio), checked before any work.

Every bad input becomes a MediaError that says what is wrong with which file and how to fix it;
no PyAV, Pillow or OS exception escapes for a bad file.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageOps

from farm.errors import MediaError

VIDEO_FIX = "pass an MP4, MOV, MKV, WEBM or GIF video; if it is one, it may be damaged: re-export it"
IMAGE_FIX = "pass a PNG, JPEG or WEBP image; if it is one, it may be damaged: re-export it"


@dataclass(frozen=True)
class VideoProbe:
    """A video's picture size, timing and audio.

    width and height are the picture as it is meant to be shown: a phone clip stored sideways with a
    rotation in its display matrix has them swapped, and `rotation` (0, 90, 180 or 270: degrees
    clockwise) says how its stored frames are turned upright; every decode here turns them.
    fps is the frame rate as a float, fps_fraction the same rate exactly ("30000/1001").
    frame_count is the number of frames a full decode yields; duration_s = frame_count / fps.
    codec names are FFmpeg's ("h264", "aac"). The audio fields are None when has_audio is False.
    """

    width: int
    height: int
    fps: float
    fps_fraction: str
    frame_count: int
    duration_s: float
    codec: str
    has_audio: bool
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None
    rotation: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ImageProbe:
    """An image's size as displayed (EXIF orientation applied), its stored Pillow mode ("RGBA",
    "L", "I;16", ...) and whether it carries transparency (an alpha that is not fully opaque)."""

    width: int
    height: int
    mode: str
    has_alpha: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def probe_video(
    path: str | Path, *, max_side: int = 8192, max_duration_s: float = 3600, max_fps: float = 240.0, max_frames: int = 36000
) -> VideoProbe:
    """Read a video's size, exact frame count, frame rate and audio streams without decoding it;
    refuse one over any of the limits."""
    path = Path(path)
    with open_video(path) as (container, stream):
        # 1. Check the picture size
        if max(stream.width, stream.height) > max_side:
            raise MediaError(path, f"is {stream.width}x{stream.height}, over the {max_side}-pixel limit",
                             f"downscale it to at most {max_side} pixels on its longer side")

        # 2. Count the frames: from the container's index when it lists every frame, else by demuxing
        frame_count = _indexed_frame_count(stream)
        if frame_count is None:
            frame_count = sum(1 for _ in demux_video_packets(path, container, stream))
        if frame_count == 0:
            raise MediaError(path, "has a video stream with no frames", VIDEO_FIX)

        # 3. Work out the frame rate and check the duration
        rate = _frame_rate(container, stream, frame_count)
        if not rate:
            raise MediaError(path, "has no frame rate in its video stream", "re-export it with a constant frame rate")
        if rate > max_fps:
            raise MediaError(path, f"has {float(rate):g} frames per second, over the {max_fps:g} fps limit",
                             f"re-export it at {max_fps:g} fps or less")
        if frame_count > max_frames:
            raise MediaError(path, f"has {frame_count} frames, over the {max_frames}-frame limit",
                             f"trim it to at most {max_frames} frames")
        duration_s = frame_count / rate
        if duration_s > max_duration_s:
            raise MediaError(path, f"lasts {float(duration_s):.1f} s, over the {max_duration_s:g} s limit",
                             f"trim it to at most {max_duration_s:g} s")

        # 4. Describe the first audio stream, if any
        audio = container.streams.audio[0].codec_context if container.streams.audio else None
        rotation = display_rotation(path)
        width, height = (stream.height, stream.width) if rotation in (90, 270) else (stream.width, stream.height)
        return VideoProbe(
            width=width,
            height=height,
            fps=float(rate),
            fps_fraction=f"{rate.numerator}/{rate.denominator}",
            frame_count=frame_count,
            duration_s=float(duration_s),
            codec=stream.codec_context.name,
            has_audio=audio is not None,
            audio_codec=audio.name if audio else None,
            audio_sample_rate=audio.sample_rate if audio else None,
            audio_channels=audio.channels if audio else None,
            rotation=rotation,
        )


def display_rotation(path: Path) -> int:
    """How the video's frames are turned to be shown upright: 0, 90, 180 or 270 degrees clockwise.

    Phones record sideways and put the turn in the track's display matrix (the frames carry it as
    side data); players apply it, so must we. Read from the first frame; 0 when there is none or
    it cannot be decoded (the decode that follows says what is wrong with the file)."""
    try:
        with open_video(path) as (container, stream):
            frame = next(container.decode(stream), None)
    except (av.FFmpegError, MediaError):
        return 0
    return 0 if frame is None else quarter_turns(frame.rotation) * 90


def quarter_turns(rotation: float) -> int:
    """Clockwise quarter turns that show a frame upright, from PyAV's `VideoFrame.rotation`
    (the display matrix's angle, counter-clockwise); an angle between quarters goes to the nearest."""
    return round(-float(rotation or 0) / 90) % 4


_UPRIGHT = {1: cv2.ROTATE_90_CLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_COUNTERCLOCKWISE}


def upright(picture: np.ndarray, rotation: float) -> np.ndarray:
    """A decoded picture (any channels) turned as its frame's display matrix says."""
    turns = quarter_turns(rotation)
    return picture if turns == 0 else cv2.rotate(picture, _UPRIGHT[turns])


@contextmanager
def open_media(path: Path, kind: str) -> Iterator[av.container.InputContainer]:
    """Open a file with PyAV; kind ("video", "audio source") names what it should be in errors."""
    _require_file(path)
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise MediaError(path, f"not a readable {kind}: {error.strerror}", VIDEO_FIX) from error
    with container:
        yield container


@contextmanager
def open_video(path: Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open a video file and its first video stream, rejecting images, files with no video and
    files cut short before the end of the frames their index lists."""
    with open_media(path, "video") as container:
        # FFmpeg reads still images through its image2 and *_pipe demuxers.
        if container.format.name == "image2" or container.format.name.endswith("_pipe"):
            raise MediaError(path, "is a still image, not a video", "pass the reference video here; images are for the character")
        if not container.streams.video:
            raise MediaError(path, "has no video stream", VIDEO_FIX)
        stream = container.streams.video[0]
        _check_not_truncated(path, stream)
        yield container, stream


def demux_video_packets(path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.Packet]:
    """Yield the packets of `stream` that decode to a shown frame, one per frame, in decode order.

    Reads the file without decoding. Skips the empty packet that ends the stream and packets an
    edit list marks as discarded (decoded for reference, never shown).
    """
    try:
        for packet in container.demux(stream):
            if packet.size and not packet.is_discard:
                yield packet
    except av.FFmpegError as error:
        raise MediaError(path, f"not a readable video: {error.strerror}", VIDEO_FIX) from error


def load_image(path: str | Path, *, max_side: int = 8192) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a PNG, JPEG or WEBP image upright (EXIF orientation applied).

    Returns rgb (H, W, 3) uint8 and alpha (H, W) uint8, or None when the image has no alpha or it
    is fully opaque. Grayscale becomes RGB; 16-bit samples are scaled to 8 bits.
    """
    rgb, alpha, _ = _decode_image(Path(path), max_side)
    return rgb, alpha


def probe_image(path: str | Path, *, max_side: int = 8192) -> ImageProbe:
    """Describe an image as load_image reads it."""
    rgb, alpha, mode = _decode_image(Path(path), max_side=max_side)
    return ImageProbe(width=rgb.shape[1], height=rgb.shape[0], mode=mode, has_alpha=alpha is not None)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    path = Path(path)
    _require_file(path)
    try:
        with path.open("rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as error:
        raise MediaError(path, f"cannot be read: {error.strerror}", "check its permissions") from error


def _require_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(path, "file not found", "check the path")
    if not path.is_file():
        raise MediaError(path, "is not a regular file", "pass the path of a file")


def _indexed_frame_count(stream: av.video.stream.VideoStream) -> int | None:
    """The number of shown frames when the container's index lists every frame (MP4, MOV), else None."""
    entries = stream.index_entries
    if stream.frames == 0 or len(entries) != stream.frames:
        return None
    return sum(not entry.is_discard for entry in entries)


def _check_not_truncated(path: Path, stream: av.video.stream.VideoStream) -> None:
    """Refuse a file whose index places frames past its end.

    MP4 and MOV index every frame, before the frames (faststart) or after them; a file cut short
    with its index ahead still opens and lists frames it no longer holds.
    """
    file_size = path.stat().st_size
    for number, entry in enumerate(stream.index_entries):
        if entry.pos + entry.size > file_size:
            raise MediaError(path, f"is truncated: frame {number} of {len(stream.index_entries)} lies past its end",
                             "download or export it again")


def _frame_rate(container: av.container.InputContainer, stream: av.video.stream.VideoStream, frame_count: int) -> Fraction | None:
    if container.format.name == "gif" and stream.duration:
        # FFmpeg guesses a GIF's average_rate from its first few frame delays; the GIF demuxer sums
        # all of the delays into the stream duration.
        return Fraction(frame_count) / (stream.duration * stream.time_base)
    return stream.average_rate or stream.guessed_rate


def _decode_image(path: Path, max_side: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """rgb (H, W, 3) uint8, alpha (H, W) uint8 or None, and the stored Pillow mode."""
    _require_file(path)
    try:
        with Image.open(path) as image:
            # The header gives the size, so oversized images are refused before their pixels are decoded.
            if max(image.size) > max_side:
                raise MediaError(path, f"is {image.width}x{image.height}, over the {max_side}-pixel limit",
                                 f"downscale it to at most {max_side} pixels on its longer side")
            mode = image.mode
            pixels = _to_8_bit_rgb_or_rgba(ImageOps.exif_transpose(image))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise MediaError(path, f"not a readable image: {error}", IMAGE_FIX) from error
    if pixels.shape[2] == 3:
        return pixels, None, mode
    alpha = np.ascontiguousarray(pixels[..., 3])
    return np.ascontiguousarray(pixels[..., :3]), (None if alpha.min() == 255 else alpha), mode


def _to_8_bit_rgb_or_rgba(image: Image.Image) -> np.ndarray:
    """(H, W, 3) or (H, W, 4) uint8 pixels of any Pillow image."""
    if image.mode.startswith("I"):
        # 16-bit grayscale opens as "I;16*" or "I", which Pillow's convert() clips instead of scaling.
        wide = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(image.convert("RGBA" if image.has_transparency_data else "RGB"))
