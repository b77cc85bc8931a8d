"""farm.media on the real clips in shared/data: probing, frame-exact range decoding, encoding, images."""
from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from farm.errors import MediaError
from farm.media.decode import iter_frames, read_frames
from farm.media.encode import VideoWriter, exact_frame_rate, join_segments
from farm.media.probe import (
    ImageProbe,
    VideoProbe,
    load_image,
    probe_image,
    probe_video,
    sha256_file,
)
from tests.conftest import REPO

DANCE = "dance_fullbody_outdoor.mp4"
ASL = "gesture_asl_please.mkv"
GIF = "walk_two_people_toward_camera.gif"
LONG = "long_people_walk_in_one_by_one.mp4"
TVHOST = "talk_upperbody_gesture_tvhost.mp4"


def _reference_frames(path: Path, start: int, stop: int) -> list[np.ndarray]:
    """Frames start..stop-1 of a plain sequential PyAV decode from the first frame."""
    with av.open(str(path)) as container:
        frames = []
        for index, frame in enumerate(container.decode(video=0)):
            if index >= stop:
                break
            if index >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
        return frames


def _decoded_frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes, in file order."""
    data, boxes, offset = path.read_bytes(), [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        offset += size
    return boxes


def _gif_delays_cs(path: Path) -> list[int]:
    """Frame delays in centiseconds from the GIF's graphic control extensions."""
    data = path.read_bytes()
    delays, at = [], data.find(b"\x21\xf9\x04")
    while at != -1:
        delays.append(int.from_bytes(data[at + 4 : at + 6], "little"))
        at = data.find(b"\x21\xf9\x04", at + 1)
    return delays


def _write_noise_video(path: Path, frames: int, fps="24", **options) -> np.ndarray:
    video = np.random.default_rng(0).integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8)
    with VideoWriter(path, fps=fps, width=64, height=48, **options) as writer:
        for frame in video:
            writer.write(frame)
    return video


def _cut(source: Path, size: int, target: Path) -> Path:
    target.write_bytes(source.read_bytes()[:size])
    return target


# --- probe_video -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, size, fps_fraction, frame_count, audio",
    [
        (DANCE, (512, 758), "24/1", 194, ("aac", 44100, 2)),
        (ASL, (640, 480), "30/1", 73, None),
        (LONG, (768, 432), "10/1", 1394, None),
        (TVHOST, (1920, 1080), "30/1", 106, ("aac", 48000, 2)),
    ],
)
def test_probe_reads_size_rate_frame_count_and_audio(shared_data, name, size, fps_fraction, frame_count, audio):
    probe = probe_video(shared_data / name)

    assert (probe.width, probe.height) == size
    assert probe.fps_fraction == fps_fraction
    assert probe.fps == float(Fraction(fps_fraction))
    assert probe.frame_count == frame_count
    assert probe.duration_s == pytest.approx(frame_count / probe.fps)
    assert probe.codec == "h264"
    assert probe.has_audio is (audio is not None)
    assert (probe.audio_codec, probe.audio_sample_rate, probe.audio_channels) == (audio or (None, None, None))


@pytest.mark.parametrize("name", [DANCE, ASL, GIF, LONG, TVHOST])
def test_frame_count_equals_full_decode(shared_data, name):
    assert probe_video(shared_data / name).frame_count == _decoded_frame_count(shared_data / name)


def test_gif_rate_comes_from_all_its_frame_delays(shared_data):
    delays = _gif_delays_cs(shared_data / GIF)  # 8, 9, 8, 8, 9, 8, ...: 12 fps rounded to centiseconds
    probe = probe_video(shared_data / GIF)

    assert probe.frame_count == len(delays) == 35
    assert probe.duration_s == pytest.approx(sum(delays) / 100) == 2.91
    assert probe.fps_fraction == "3500/291"
    assert probe.codec == "gif"


def test_video_probe_dict_holds_every_field(shared_data):
    probe = probe_video(shared_data / DANCE)
    assert VideoProbe(**probe.to_dict()) == probe


def test_missing_video_is_reported_as_not_found(tmp_path):
    with pytest.raises(MediaError, match="file not found"):
        probe_video(tmp_path / "missing.mp4")


def test_text_file_named_mp4_is_not_a_readable_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    with pytest.raises(MediaError, match="not a readable video"):
        probe_video(text)
    with pytest.raises(MediaError, match="not a readable video"):
        iter_frames(text)


@pytest.mark.parametrize("name", ["fullbody_photo_man.png", "stylized_fantasy_halfbody.jpeg"])
def test_image_passed_as_video_is_refused(shared_data, name):
    with pytest.raises(MediaError, match="still image, not a video"):
        probe_video(shared_data / name)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100, layout="mono")
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 4410), np.float32), format="fltp", layout="mono")
        silence.sample_rate, silence.pts = 44100, 0
        container.mux(stream.encode(silence))
        container.mux(stream.encode(None))
    with pytest.raises(MediaError, match="has no video stream"):
        probe_video(path)


def test_video_stream_without_frames_is_refused(shared_data, tmp_path):
    header_only = _cut(shared_data / ASL, 4096, tmp_path / "header_only.mkv")
    with pytest.raises(MediaError, match="no frames"):
        probe_video(header_only)
    with pytest.raises(MediaError, match="no frames"):
        iter_frames(header_only)


@pytest.mark.parametrize("keep", ["half", "first 4 KiB"])
def test_truncated_dance_clip_is_refused(shared_data, tmp_path, keep):
    source = shared_data / DANCE
    size = source.stat().st_size // 2 if keep == "half" else 4096
    cut = _cut(source, size, tmp_path / "cut.mp4")
    with pytest.raises(MediaError, match="not a readable video"):
        probe_video(cut)
    with pytest.raises(MediaError, match="not a readable video"):
        iter_frames(cut, 0, 1)


def test_truncated_mp4_with_index_first_is_refused_not_miscounted(tmp_path):
    whole = tmp_path / "whole.mp4"
    _write_noise_video(whole, 24)
    assert _top_level_boxes(whole).index("moov") < _top_level_boxes(whole).index("mdat")
    cut = _cut(whole, whole.stat().st_size // 2, tmp_path / "cut.mp4")

    with pytest.raises(MediaError, match=r"is truncated: frame \d+ of 24 lies past its end"):
        probe_video(cut)
    with pytest.raises(MediaError, match="is truncated"):
        iter_frames(cut)


def test_video_over_size_or_duration_limit_is_refused(shared_data):
    with pytest.raises(MediaError, match="512x758, over the 700-pixel limit"):
        probe_video(shared_data / DANCE, max_side=700)
    with pytest.raises(MediaError, match="lasts 8.1 s, over the 5 s limit"):
        probe_video(shared_data / DANCE, max_duration_s=5)


# --- iter_frames / read_frames ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, start, stop",
    [(DANCE, 50, 60), (ASL, 50, 60), (GIF, 25, 35), (LONG, 1380, 1394)],
)
def test_frame_range_matches_full_decode(shared_data, name, start, stop):
    expected = _reference_frames(shared_data / name, start, stop)
    frames = list(iter_frames(shared_data / name, start, stop))

    assert len(frames) == len(expected) == stop - start
    for frame, reference in zip(frames, expected):
        assert frame.dtype == np.uint8 and frame.flags.c_contiguous
        np.testing.assert_array_equal(frame, reference)


def test_frame_range_matches_full_decode_after_seeking_in_mkv(shared_data, tmp_path):
    # The long clip has a keyframe every 10 frames; copied into Matroska, seeking goes through its cues.
    mkv = tmp_path / "long.mkv"
    with av.open(str(shared_data / LONG)) as source, av.open(str(mkv), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None and packet.pts < 300 * 20000:
                packet.stream = stream
                target.mux(packet)

    frames = list(iter_frames(mkv, 255, 265))

    expected = _reference_frames(mkv, 255, 265)
    assert len(frames) == len(expected) == 10
    for frame, reference in zip(frames, expected):
        np.testing.assert_array_equal(frame, reference)


def test_read_frames_stacks_the_range(shared_data):
    frames = read_frames(shared_data / DANCE, 100, 104)

    assert frames.shape == (4, 758, 512, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, np.stack(_reference_frames(shared_data / DANCE, 100, 104)))


def test_whole_video_is_yielded_when_stop_is_none(shared_data):
    assert sum(1 for _ in iter_frames(shared_data / GIF)) == 35
    assert read_frames(shared_data / GIF, 35).shape == (0, 270, 480, 3)


def test_range_past_the_end_is_refused_before_decoding(shared_data):
    with pytest.raises(MediaError, match="has 194 frames, too few for frames 190 to 199"):
        iter_frames(shared_data / DANCE, 190, 200)
    with pytest.raises(MediaError, match="too few for frames from 195 on"):
        iter_frames(shared_data / DANCE, 195)


@pytest.mark.parametrize("start, stop", [(-1, 5), (10, 5)])
def test_backward_range_is_a_value_error(shared_data, start, stop):
    with pytest.raises(ValueError, match="not a range"):
        iter_frames(shared_data / DANCE, start, stop)


# --- VideoWriter -----------------------------------------------------------------------------------

def test_writer_round_trips_frames_and_trims_source_audio(shared_data, tmp_path):
    source = shared_data / DANCE
    frames = read_frames(source, 0, 48)
    out = tmp_path / "dance.mp4"

    with VideoWriter(out, fps=24, width=512, height=758, audio_from=source) as writer:
        for frame in frames:
            writer.write(frame)

    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert video.average_rate == 24
        assert audio.codec_context.name == "aac"
        assert float(audio.duration * audio.time_base) == pytest.approx(2.0, abs=0.05)
    decoded = read_frames(out)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(np.int16) - frames).mean() < 3
    assert _top_level_boxes(out).index("moov") < _top_level_boxes(out).index("mdat")  # faststart
    assert [p.name for p in tmp_path.iterdir()] == ["dance.mp4"]


def test_segments_join_without_reencoding_into_one_video_with_audio(shared_data, tmp_path):
    source = shared_data / DANCE
    frames = read_frames(source, 0, 48)
    cuts = [0, 20, 21, 48]  # a one-frame segment has no B-frame delay, the others have one
    segments = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        segments.append(tmp_path / f"segment-{i}.mp4")
        with VideoWriter(segments[-1], fps=Fraction(24), width=512, height=758) as writer:
            for frame in frames[a:b]:
                writer.write(frame)
    out = tmp_path / "out" / "joined.mp4"
    out.parent.mkdir()

    assert join_segments(segments, out, fps=24, audio_from=source) == 48

    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.average_rate == 24 and audio.codec_context.name == "aac"
        assert float(audio.duration * audio.time_base) == pytest.approx(2.0, abs=0.05)
        ticks = sorted(p.pts for p in container.demux(video) if p.size)
    assert ticks == [round(i / (24 * video.time_base)) for i in range(48)]  # every frame once, in place
    probe = probe_video(out)
    assert probe.frame_count == _decoded_frame_count(out) == 48
    decoded = read_frames(out)
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):  # each frame is the segment's own, bit for bit
        assert np.array_equal(decoded[a:b], read_frames(segments[i]))
    assert np.abs(decoded.astype(np.int16) - frames).mean() < 3
    assert _top_level_boxes(out).index("moov") < _top_level_boxes(out).index("mdat")
    assert [p.name for p in out.parent.iterdir()] == ["joined.mp4"]


def test_a_missing_segment_leaves_no_joined_video(tmp_path):
    first = tmp_path / "segment-0.mp4"
    _write_noise_video(first, 6)
    with pytest.raises(MediaError, match="segment-1.mp4"):
        join_segments([first, tmp_path / "segment-1.mp4"], tmp_path / "joined.mp4", fps=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segment-0.mp4"]


@pytest.mark.parametrize(
    "fps, fraction",
    [(29.97, "30000/1001"), (24, "24/1"), (12.5, "25/2"), ("30000/1001", "30000/1001"), (Fraction(25, 2), "25/2")],
)
def test_written_frames_decode_back_at_the_exact_rate(tmp_path, fps, fraction):
    out = tmp_path / "noise.mp4"
    _write_noise_video(out, 15, fps=fps)

    probe = probe_video(out)

    assert probe.fps_fraction == fraction
    assert probe.frame_count == _decoded_frame_count(out) == 15
    assert probe.duration_s == pytest.approx(15 / float(Fraction(fraction)))


def test_source_without_audio_gives_video_only_output(shared_data, tmp_path):
    out = tmp_path / "silent.mp4"
    _write_noise_video(out, 6, audio_from=shared_data / ASL)
    assert probe_video(out).has_audio is False


def test_exception_inside_with_leaves_no_file(tmp_path):
    out = tmp_path / "failed.mp4"
    with pytest.raises(RuntimeError, match="render failed"), VideoWriter(out, fps=24, width=64, height=48) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
        raise RuntimeError("render failed")
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_shape_is_a_value_error_and_leaves_no_file(tmp_path):
    shape_error = r"frame is \(48, 64, 4\) uint8; this writer takes \(48, 64, 3\) uint8 RGB"
    with pytest.raises(ValueError, match=shape_error), VideoWriter(tmp_path / "out.mp4", fps=24, width=64, height=48) as writer:
        writer.write(np.zeros((48, 64, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_odd_size_is_refused_naming_the_size(tmp_path):
    with pytest.raises(ValueError, match="513x758"):
        VideoWriter(tmp_path / "out.mp4", fps=24, width=513, height=758)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "fps, exact",
    [(29.97, Fraction(30000, 1001)), (23.976, Fraction(24000, 1001)), (59.94, Fraction(60000, 1001)),
     (24, Fraction(24)), (30, Fraction(30)), (12.5, Fraction(25, 2)), ("2160/77", Fraction(2160, 77)),
     (3500 / 291, Fraction(3500, 291))],
)
def test_exact_frame_rate(fps, exact):
    assert exact_frame_rate(fps) == exact


# --- images ----------------------------------------------------------------------------------------

def test_opaque_alpha_is_dropped(shared_data):
    path = shared_data / "fullbody_photo_man.png"  # RGBA, alpha 255 everywhere
    rgb, alpha = load_image(path)

    assert alpha is None
    assert rgb.shape == (913, 622, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


def test_jpeg_is_read_as_rgb(shared_data):
    path = shared_data / "stylized_fantasy_halfbody.jpeg"
    rgb, alpha = load_image(path)

    assert alpha is None
    assert rgb.shape == (720, 1280, 3)
    assert np.abs(rgb.astype(np.int16) - cv2.imread(str(path))[..., ::-1]).mean() < 1


def test_real_alpha_is_kept(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (30, 40, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "cutout.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))

    rgb, alpha = load_image(tmp_path / "cutout.png")

    np.testing.assert_array_equal(rgb, rgba[..., :3])
    np.testing.assert_array_equal(alpha, rgba[..., 3])
    assert probe_image(tmp_path / "cutout.png") == ImageProbe(width=40, height=30, mode="RGBA", has_alpha=True)


def test_16_bit_grayscale_becomes_8_bit_rgb(tmp_path):
    gray = np.array([[0, 257, 32896], [65535, 1000, 65280]], np.uint16)
    cv2.imwrite(str(tmp_path / "depth.png"), gray)

    rgb, alpha = load_image(tmp_path / "depth.png")

    assert alpha is None and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.repeat(np.array([[0, 1, 128], [255, 4, 254]], np.uint8)[..., None], 3, axis=2))


def test_exif_orientation_is_applied(tmp_path):
    wide = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    wide.save(tmp_path / "phone.jpg", exif=exif)

    rgb, _ = load_image(tmp_path / "phone.jpg")

    assert rgb.shape == (40, 20, 3)


def _phone_copies(frames: np.ndarray, folder: Path, rotation: int) -> tuple[Path, Path]:
    """The frames written upright, and stored turned with the display rotation that shows them
    upright again (PyAV's counter-clockwise degrees), as a phone records a clip held the other way."""
    stored = {-90: cv2.ROTATE_90_COUNTERCLOCKWISE, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180}[rotation]
    paths = folder / "upright.mp4", folder / f"phone{rotation}.mp4"
    for path, turn in zip(paths, (None, stored)):
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=30, options={"qp": "0"})
            shape = frames[0].shape if turn is None else cv2.rotate(frames[0], turn).shape
            stream.height, stream.width, stream.pix_fmt = shape[0], shape[1], "yuv444p"
            if turn is not None:
                stream.set_display_rotation(rotation)
            for frame in frames:
                picture = frame if turn is None else cv2.rotate(frame, turn)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")))
            out.mux(stream.encode())
    return paths


@pytest.mark.parametrize("rotation, turned", [(-90, 90), (90, 270), (180, 180)])
def test_a_phone_clip_stored_turned_is_read_upright(tmp_path, rotation, turned):
    """A clip whose display matrix turns it (a phone held the other way) is probed at the size it is
    shown and decoded upright, every frame: the same pictures as the clip written upright."""
    frames = read_frames(REPO / "jobs" / "media" / ASL, 0, 12)
    upright, phone = _phone_copies(frames, tmp_path, rotation)

    probe = probe_video(phone)
    assert (probe.width, probe.height, probe.rotation) == (640, 480, turned)
    assert probe_video(upright).rotation == 0

    shown = read_frames(phone)
    assert shown.shape == frames.shape
    assert np.abs(shown.astype(int) - read_frames(upright).astype(int)).max() <= 1  # lossless both ways
    assert np.array_equal(next(iter_frames(phone, 5, 6)), shown[5])  # a range that seeks is turned too


@pytest.mark.parametrize("content", [b"", b"not an image\n"])
def test_non_image_is_refused(tmp_path, content):
    path = tmp_path / "character.png"
    path.write_bytes(content)
    with pytest.raises(MediaError, match="not a readable image"):
        load_image(path)


def test_image_over_size_limit_is_refused(shared_data):
    with pytest.raises(MediaError, match="622x913, over the 800-pixel limit"):
        load_image(shared_data / "fullbody_photo_man.png", max_side=800)


def test_probe_image_reports_stored_mode(shared_data):
    probe = probe_image(shared_data / "fullbody_photo_man.png")
    assert probe == ImageProbe(width=622, height=913, mode="RGBA", has_alpha=False)
    assert probe.to_dict() == {"width": 622, "height": 913, "mode": "RGBA", "has_alpha": False}


def test_sha256_file_hashes_the_bytes(shared_data, tmp_path):
    path = shared_data / GIF
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(MediaError, match="file not found"):
        sha256_file(tmp_path / "missing.png")
