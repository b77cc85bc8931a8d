"""Write RGB frames to an H.264 MP4 that any player and browser opens, optionally with audio.

The file appears at its path only once it is complete: frames go to a hidden partial file next to
it, which close() renames into place.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

from farm.errors import MediaError
from farm.media.probe import open_media

# ITU-R BT.709, limited range: what players assume for HD video, written into the stream so they
# need not guess.
_BT709 = 1
_LIMITED_RANGE = 1
_AAC_FALLBACK_RATE = 48000


def exact_frame_rate(fps: float | str | Fraction) -> Fraction:
    """The frame rate as an exact fraction. A Fraction is taken as it is; numbers and strings that
    were typed by a person snap: NTSC rates to n*1000/1001 (29.97 -> 30000/1001), others to the
    nearest fraction with a denominator up to 1001 (24 -> 24/1, 12.5 -> 25/2)."""
    # A float's decimal text is what the user wrote; its binary value is not (29.97 != 2997/100).
    rate = Fraction(str(fps)) if isinstance(fps, float) else Fraction(fps)
    if rate <= 0:
        raise ValueError(f"frame rate {fps} is not positive")
    if isinstance(fps, Fraction):
        return rate  # already exact (e.g. a probed stream rate): keep it, or frames drift from the audio
    ntsc = Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)
    if rate.denominator != 1 and abs(rate - ntsc) < Fraction(1, 200):
        return ntsc
    return rate.limit_denominator(1001)


class VideoWriter:
    """Encode (H, W, 3) uint8 RGB frames to H.264 (libx264, yuv420p, BT.709) in an MP4 with faststart.

    fps: any of 24, 29.97, "30000/1001", Fraction(25, 2); stored exactly (see exact_frame_rate), so
    N frames play for N / fps seconds. width, height: even, as yuv420p requires.
    audio_from: a file whose first audio stream, trimmed to the video's duration and re-encoded to
    AAC, becomes the output's audio (its first sample at the first frame); a file without audio
    gives a video-only output.
    threads: encoder threads; None lets x264 use every core (a farm task that owns one core says 1).
    Use as a context manager: an exception inside the `with` deletes the partial file and leaves
    nothing at `path`.
    """

    def __init__(self, path: str | Path, *, fps: float | str | Fraction, width: int, height: int, crf: int = 18,
                 preset: str = "veryfast", audio_from: str | Path | None = None, threads: int | None = None) -> None:
        # 1. Check inputs
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"video size {width}x{height} must be positive and even for H.264 yuv420p: pad or crop it")
        self.path = Path(path)
        self.fps = exact_frame_rate(fps)
        self.width, self.height = width, height
        self.frames_written = 0
        self._audio_from = None if audio_from is None else Path(audio_from)
        self._partial = self.path.with_name(f".{self.path.stem}.{secrets.token_hex(6)}.partial.mp4")  # never shared by two writers

        # 2. Open the partial file with a video stream, and an audio stream when there is audio
        audio_format = _audio_format(self._audio_from)
        self._container = av.open(str(self._partial), "w", format="mp4", container_options={"movflags": "+faststart"})
        try:
            self._video = _add_video_stream(self._container, self.fps, width, height, crf, preset, threads)
            self._audio = None if audio_format is None else _add_aac_stream(self._container, *audio_format)
        except BaseException:
            self._discard()
            raise
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame is {frame.shape} {frame.dtype}; this writer takes ({self.height}, {self.width}, 3) uint8 RGB")
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(
            format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG,
        )
        picture.pts = self.frames_written
        self._container.mux(self._video.encode(picture))
        self.frames_written += 1

    def close(self) -> None:
        """Finish the video stream, mux the audio, then rename the file into place."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were written to {self.path}")
            # 1. Flush the frames the encoder still holds
            self._container.mux(self._video.encode(None))
            # 2. Mux the audio, cut at the last frame's end
            if self._audio is not None:
                _mux_audio(self._container, self._audio, self._audio_from, Fraction(self.frames_written) / self.fps)
            # 3. Write the index (moved to the front: faststart) and put the file in place
            self._container.close()
        except BaseException:
            self._discard()
            raise
        os.replace(self._partial, self.path)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._closed = True
            self._discard()

    def _discard(self) -> None:
        # The partial file is thrown away, so a failure to finish it is of no interest.
        with contextlib.suppress(av.FFmpegError, OSError):
            self._container.close()
        self._partial.unlink(missing_ok=True)


def join_segments(segments: list[str | Path], path: str | Path, *, fps: float | str | Fraction,
                  audio_from: str | Path | None = None) -> int:
    """Concatenate H.264 MP4 segments written by VideoWriter with the same size, frame rate and
    encoder settings into one MP4 at `path`, without re-encoding (each segment starts with a
    keyframe). Then the audio of `audio_from`, cut to the joined video's length, is added as
    VideoWriter would. Returns the number of frames; like VideoWriter, nothing appears at `path`
    unless it completes.

    Timestamps: a packet's presentation time moves on by the frames of the segments before it.
    Decode times are laid out anew over the whole video, one frame apart, with the largest reorder
    delay of any segment (B-frames make it 2 frames for x264; a very short segment has none), so
    they rise strictly and never pass a presentation time.
    """
    if not segments:
        raise ValueError(f"no segments to join into {path}")
    path = Path(path)
    rate = exact_frame_rate(fps)
    partial = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.partial.mp4")
    audio_format = _audio_format(None if audio_from is None else Path(audio_from))
    # 1. Read every segment's presentation times (packets only, nothing is decoded)
    presentation = []
    for segment in segments:
        with open_media(Path(segment), "video segment") as source:
            stream = source.streams.video[0]
            tick = 1 / (rate * stream.time_base)
            presentation.append([round(p.pts / tick) for p in source.demux(stream) if p.size])
    delay = max(0, *(j - pts for frames in presentation for j, pts in enumerate(frames)))
    # 2. Copy the packets with the new timestamps, then the audio
    frames = 0
    try:
        with av.open(str(partial), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
            video = audio = None
            for segment, times in zip(segments, presentation):
                with open_media(Path(segment), "video segment") as source:
                    stream = source.streams.video[0]
                    if video is None:
                        video = out.add_stream_from_template(stream)
                        audio = None if audio_format is None else _add_aac_stream(out, *audio_format)
                    tick = round(1 / (rate * stream.time_base))
                    packets = (p for p in source.demux(stream) if p.size)
                    for j, (packet, pts) in enumerate(zip(packets, times, strict=True)):
                        packet.pts = (frames + pts) * tick
                        packet.dts = (frames + j - delay) * tick
                        packet.stream = video
                        out.mux(packet)
                    frames += len(times)
            if audio is not None:
                _mux_audio(out, audio, Path(audio_from), Fraction(frames) / rate)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    return frames


def _audio_format(source_path: Path | None) -> tuple[int, str] | None:
    """(sample rate, channel layout) for the output's audio, or None when there is none."""
    if source_path is None:
        return None
    with open_media(source_path, "audio source") as source:
        if not source.streams.audio:
            return None
        audio = source.streams.audio[0].codec_context
        return audio.sample_rate, ("mono" if audio.channels == 1 else "stereo")


def _mux_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, source_path: Path,
               duration: Fraction) -> None:
    """Encode the source's audio from its first sample, stopping `duration` seconds in."""
    rate = stream.codec_context.sample_rate
    samples_left = round(duration * rate)
    samples_done = 0
    with contextlib.closing(_source_audio(source_path, stream.codec_context.layout.name, rate)) as frames:
        for frame in frames:
            if samples_left <= 0:
                break
            if frame.samples > samples_left:
                frame = _first_samples(frame, samples_left)
            frame.pts = samples_done
            frame.time_base = Fraction(1, rate)
            samples_done += frame.samples
            samples_left -= frame.samples
            container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _add_video_stream(container: av.container.OutputContainer, fps: Fraction, width: int, height: int, crf: int,
                      preset: str, threads: int | None = None) -> av.video.stream.VideoStream:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.options = {"crf": str(crf), "preset": preset, **({"threads": str(threads)} if threads else {})}
    context = stream.codec_context
    context.colorspace = context.color_primaries = context.color_trc = _BT709
    context.color_range = _LIMITED_RANGE
    return stream


def _add_aac_stream(container: av.container.OutputContainer, source_rate: int, layout: str) -> av.audio.stream.AudioStream:
    codec = av.Codec("aac", "w")
    rate = source_rate if source_rate in (codec.audio_rates or ()) else _AAC_FALLBACK_RATE
    return container.add_stream("aac", rate=rate, layout=layout)


def _source_audio(path: Path, layout: str, rate: int) -> Iterator[av.AudioFrame]:
    """The first audio stream of `path` decoded to planar float frames in the given layout and rate."""
    to_planar = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    with open_media(path, "audio source") as source:
        try:
            for decoded in itertools.chain(source.decode(source.streams.audio[0]), [None]):
                yield from to_planar.resample(decoded)
        except av.FFmpegError as error:
            raise MediaError(path, f"has audio that cannot be decoded: {error.strerror}",
                             "re-export it, or render without its audio") from error


def _first_samples(frame: av.AudioFrame, count: int) -> av.AudioFrame:
    """The first `count` samples of a planar float frame."""
    planes = np.ascontiguousarray(frame.to_ndarray()[:, :count])
    cut = av.AudioFrame.from_ndarray(planes, format="fltp", layout=frame.layout.name)
    cut.sample_rate = frame.sample_rate
    return cut
