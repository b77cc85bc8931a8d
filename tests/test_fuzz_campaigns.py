"""Fuzzing campaign files (hypothesis): random ids, paths, unicode, markup, interpolation and nested
overrides. Whatever a campaign holds, the farm answers with one line of error (exit 2) or runs it;
never a traceback, never a write outside OUT, never a secret of the environment in what it writes."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm import cli
from tests.test_render import MEDIA

SECRET_NAME = "AWS_SECRET_ACCESS_KEY"
NASTY = ["${oc.env:AWS_SECRET_ACCESS_KEY}", "${oc.env:HOME}", "[/x]", "[link=http://x]y[/link]", "take[v2].mp4", "../..", "/etc/passwd",
         "..\\..", "\n", "\x00", "é✓🎬", "s3://bucket/key", "file:///dev/zero", "C:\\x", "~", "*", "{a: b}", "[1, 2]", "null"]
VALID_OVERRIDES = ["output.size=64", "match=video", "match.motion_weight=0.5", "window.length=32", "pose.hands=false", "seed=7",
                   "prompt=hello", "backend.grid_divisions=20"]
HOSTILE_OVERRIDES = ["prompt=${oc.env:AWS_SECRET_ACCESS_KEY}", "runtime.address=ray://evil:10001", "storage.roots=[]",
                     "storage=../../x", "qa.max_side=999999", "window.length=100000000", "+runtime.x=1", "~qa", "hydra.run.dir=/",
                     "backend.model=/etc", "output=../../../etc/passwd", "match.mode=${oc.env:HOME}", "output.size=[1,{a:2}]",
                     "output.szie=64", "a.b.c.d=1", "=", "match=video,image", "seed=${now:%Y}"]

text = st.one_of(st.sampled_from(NASTY), st.text(max_size=12), st.sampled_from(["walk", "please-1", "a" * 70]))
override = st.one_of(st.sampled_from(VALID_OVERRIDES), st.sampled_from(HOSTILE_OVERRIDES), text.map(lambda t: f"prompt={t}"),
                     st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["output.size", "match.mode", "window.overlap", "seed"]), text))
scalar = st.one_of(text, st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.dates(), st.none())
path = st.one_of(st.sampled_from([str(MEDIA / "gesture_asl_please.mkv"), str(MEDIA / "childdrawing_char1.png"), "missing.mp4"]),
                 st.sampled_from([str(MEDIA / "gesture_asl_please.mkv"), "s3://bucket/in/x.png"]), text)
rights = st.one_of(st.dictionaries(st.sampled_from(["consent", "license", "motion_source", "character_source", "other"]),
                                   st.one_of(scalar, st.lists(scalar, max_size=2)), max_size=3), scalar)
shot = st.fixed_dictionaries(
    {"motion": path, "character": path},
    optional={"id": st.one_of(st.sampled_from(["walk", "walk-2", "a.b_c"]), text, scalar), "prompt": st.one_of(text, scalar),
              "overrides": st.one_of(st.lists(override, max_size=3), scalar), "variants": st.one_of(st.integers(-1, 3), scalar),
              "rights": rights, "skeleton": path, "mask": path, "extra": scalar},
)
campaign = st.fixed_dictionaries(
    # Mostly well-formed at the top, so most cases reach the shots, their overrides and rights.
    {"name": st.one_of(st.just("night"), st.just("night"), st.just("c"), text, scalar),
     "shots": st.one_of(st.lists(shot, min_size=1, max_size=3), st.lists(shot, min_size=1, max_size=3), scalar)},
    optional={"defaults": st.one_of(st.lists(override, max_size=4), scalar), "shots_file": path},
)


def _run(argv: list[str]) -> tuple[int, str]:
    """The CLI in this process: (exit status, what it printed)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = cli.run(argv)
    return code, err.getvalue() + out.getvalue()


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _checked(doc) -> tuple[int, list[str]]:
    """`farm submit --check` of the campaign `doc`: exit 0 or 2, no traceback, no secret, nothing
    written anywhere; returns the exit status and the printed lines."""
    secret = os.environ.setdefault(SECRET_NAME, "fuzz-planted-secret")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        before = _tree(root)
        code, printed = _run(["submit", str(root / "c.yaml"), "-o", str(root / "out"), "--check"])
        assert code in (0, 2), printed
        assert "Traceback" not in printed and "internal error" not in printed and secret not in printed
        assert _tree(root) == before  # --check writes nothing, anywhere
    return code, [line for line in printed.splitlines() if line.strip()]


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=campaign)
def test_any_campaign_file_is_refused_in_one_line_or_accepted(doc):
    code, lines = _checked(doc)
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), lines


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(prompt=text, shot_id=st.sampled_from(["please", "a.b_c-1", "x" * 64]))
def test_fuzzed_text_renders_and_stays_inside_out(prompt, shot_id):
    secret = os.environ.setdefault(SECRET_NAME, "fuzz-planted-secret")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        argv = ["render", str(MEDIA / "gesture_asl_please.mkv"), str(MEDIA / "childdrawing_char1.png"), "--character-skeleton",
                str(MEDIA / "childdrawing_char1_skeleton.yaml"), "--character-mask", str(MEDIA / "childdrawing_char1_mask.png"),
                "--id", shot_id, "--prompt", prompt, "-o", str(root / "out"), "output.size=64", "output.pose_preview=false"]
        code, printed = _run(argv)
        assert code in (0, 2), printed
        assert "Traceback" not in printed and secret not in printed
        assert _tree(root) <= {"out"} | {f"out/{p}" for p in _tree(root / "out")}
        if code == 0:
            written = [p for p in (root / "out").rglob("*") if p.is_file()]
            assert any(p.name == "video.mp4" for p in written)
            assert not [p for p in written if secret.encode() in p.read_bytes()]


VALID_SHOT = {"id": "walk", "motion": str(MEDIA / "gesture_asl_please.mkv"), "character": str(MEDIA / "childdrawing_char1.png")}
one_field = st.one_of(
    st.tuples(st.just("defaults"), st.lists(override, min_size=1, max_size=3)),
    st.tuples(st.sampled_from(["id", "prompt", "motion", "character", "skeleton", "mask"]), text),
    st.tuples(st.just("overrides"), st.lists(override, min_size=1, max_size=3)),
    st.tuples(st.just("rights"), rights),
    st.tuples(st.just("variants"), st.one_of(st.integers(-2, 4), scalar)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(change=one_field)
def test_a_good_campaign_with_one_fuzzed_field_is_refused_in_one_line_or_accepted(change):
    key, value = change
    doc = {"name": "night", "shots": [dict(VALID_SHOT)]}
    if key == "defaults":
        doc["defaults"] = value
    else:
        doc["shots"][0][key] = value
    code, lines = _checked(doc)
    assert len(lines) == 1 and lines[0].startswith("error: " if code == 2 else "campaign night: "), lines
