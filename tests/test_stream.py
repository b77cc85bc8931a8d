"""`farm render` with its stages overlapped (runtime.stream, farm.shot.render): the same shot as one
stage after the other, and a failure on either side stops the other and leaves no take."""
from __future__ import annotations

import json
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from farm.backends.puppet import PuppetBackend
from farm.config import load_config
from farm.media.decode import read_frames
from farm.shot.render import render_shot
from tests.test_render import drawing_shot

# Short windows and segments, so that a 73-frame clip has 6 windows in 2 segments: the encoder
# waits on windows still rendering, and colour fits are chained across segments.
SMALL = ["output.size=128", "window.length=16", "window.overlap=4", "output.segment_frames=30"]


def _published(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.name not in ("manifest.json", "report.html", "thumb.jpg")}


def test_the_streamed_render_is_the_staged_render(tmp_path):
    shot = drawing_shot("gesture_asl_please.mkv", "char1", shot_id="please")
    staged = render_shot(shot, load_config([*SMALL, "runtime.stream=false"]), tmp_path / "staged")
    streamed = render_shot(shot, load_config([*SMALL, "runtime.stream=true"]), tmp_path / "streamed")
    assert [staged.status, streamed.status] == ["succeeded", "succeeded"], [staged.error, streamed.error]
    assert len(streamed.manifest["windows"]) == 6 and len(streamed.manifest["segments"]) == 2
    # Every artifact: the tables byte for byte; the videos frame for frame, up to the encoder
    # (x264's bytes for the same frames are not always the same between two runs of one process,
    # stream or not; see the README's "Speed on a laptop").
    ours, theirs = _published(streamed.folder), _published(staged.folder)
    assert sorted(ours) == sorted(theirs) == sorted(["poses/driving.parquet", "poses/target.parquet", "pose_preview.mp4",
                                                      "qa.parquet", "video.mp4"])
    assert [name for name in ours if name.endswith(".parquet") and ours[name] != theirs[name]] == []
    for video in ("video.mp4", "pose_preview.mp4"):
        mine, yours = read_frames(streamed.folder / video).astype(int), read_frames(staged.folder / video).astype(int)
        assert mine.shape == yours.shape and mine.shape[0] == 73
        same, shifted = np.abs(mine - yours).mean(), np.abs(mine[1:] - yours[:-1]).mean()
        assert same < 1.0 and shifted > 2 * same, (video, same, shifted)
    # The same record, but for how long things took.
    for key in ("content_key", "metrics", "qa", "preflight", "retarget"):
        assert streamed.manifest[key] == staged.manifest[key], key
    assert [a["path"] for a in streamed.manifest["artifacts"]] == [a["path"] for a in staged.manifest["artifacts"]]
    assert set(streamed.manifest["timings"]) >= {"pose", "preflight", "generate", "encode", "artifacts", "report"}
    assert (streamed.folder / "report.html").is_file()


class _BreaksAt(PuppetBackend):
    """The puppet, failing on the window that starts at `start` (a model that runs out of memory)."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.start, self.rendered = start, []

    def render_window(self, request):
        if request.start == self.start:
            raise MemoryError(f"out of memory on the window at frame {request.start}")
        self.rendered.append(request.start)
        return super().render_window(request)


def test_a_window_that_fails_while_others_encode_fails_the_shot_and_the_rerun_keeps_the_windows_made(tmp_path):
    shot = drawing_shot("gesture_asl_please.mkv", "char1", shot_id="please")
    cfg = load_config(SMALL)
    broken = _BreaksAt(start=36)
    result = render_shot(shot, cfg, tmp_path, backend=broken)
    assert result.status == "failed" and "out of memory on the window at frame 36" in result.error
    assert broken.rendered == [0, 12, 24]  # nothing after the failure
    record = json.loads((result.folder / "manifest.json").read_text())
    assert record["status"] == "failed" and "MemoryError" in record["error"]["message"]
    # No take (the pose artifacts written meanwhile went with it), no segment; the windows stay.
    names = sorted(p.name for p in result.folder.iterdir() if p.name != ".farm-shot")
    assert names == ["manifest.json", "windows"], names
    assert len(list((result.folder / "windows").glob("*.npz"))) == 3

    again = PuppetBackend()
    rerun = render_shot(shot, cfg, tmp_path, backend=again)
    assert rerun.status == "succeeded", rerun.error
    assert [w["reused"] for w in rerun.manifest["windows"]] == [True, True, True, False, False, False]
    assert {a["path"] for a in rerun.manifest["artifacts"]} >= {"video.mp4", "pose_preview.mp4", "poses/driving.parquet"}
    assert pq.read_table(rerun.folder / "qa.parquet").num_rows == 73


def test_an_encoder_that_fails_stops_the_windows_still_to_render(tmp_path, monkeypatch):
    import farm.media.encode
    import farm.shot.render

    written = []
    original = farm.media.encode.VideoWriter.write

    def write(self, frame):
        if self.path.suffix == ".mp4" and self.path.parent.name == "segments" and len(written) == 20:
            raise OSError("no space left on device")
        written.append(frame.shape)
        return original(self, frame)

    # The windows from frame 36 on wait until the shot has given up on them (on a busy machine the
    # windows could otherwise all render before the encoder reaches frame 20): the one in hand
    # finishes, and no window after it starts.
    gave_up = threading.Event()
    cancel = farm.shot.render._Arrivals.cancel

    def cancel_and_say(self):
        cancel(self)
        gave_up.set()

    class _Waits(_BreaksAt):
        def render_window(self, request):
            if request.start >= 36:
                assert gave_up.wait(120), "the shot never gave up on its windows"
            return super().render_window(request)

    monkeypatch.setattr(farm.media.encode.VideoWriter, "write", write)
    monkeypatch.setattr(farm.shot.render._Arrivals, "cancel", cancel_and_say)
    shot = drawing_shot("gesture_asl_please.mkv", "char1", shot_id="please")
    counted = _Waits(start=-1)  # never breaks: counts the windows it renders
    result = render_shot(shot, load_config([*SMALL, "output.pose_preview=false"]), tmp_path, backend=counted)
    assert result.status == "failed" and "no space left on device" in result.error
    assert counted.rendered == [0, 12, 24, 36]  # the window in hand when the encoder failed, none after
    names = sorted(p.name for p in result.folder.iterdir() if p.name != ".farm-shot")
    assert names == ["manifest.json", "windows"], names


@pytest.mark.parametrize("stream", ["true", "false"])
def test_the_cli_renders_either_way_and_says_where_the_video_is(tmp_path, stream):
    from tests.test_cli import run_farm
    from tests.test_render import MEDIA

    done = run_farm("render", MEDIA / "gesture_asl_please.mkv", MEDIA / "childdrawing_char3_candycorn.png",
                    "--character-skeleton", MEDIA / "childdrawing_char3_skeleton.yaml",
                    "--character-mask", MEDIA / "childdrawing_char3_candycorn_mask.png",
                    "-o", tmp_path, "--json", "output.size=96", f"runtime.stream={stream}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    frames = read_frames(result["video"])
    assert frames.shape[0] == 73 and np.asarray(frames).std() > 5
