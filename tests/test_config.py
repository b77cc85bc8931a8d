"""Configuration: Hydra composition, typed validation, clear errors."""
import pytest

from farm.config import load_config
from farm.errors import FarmError


def test_defaults_compose_into_typed_groups():
    cfg = load_config()
    assert cfg.backend.name == "puppet" and cfg.match.mode == "image" and cfg.output.size == 512
    assert cfg.output.fps is None and cfg.output.keep_audio is True and cfg.pose.hands is True


def test_group_choice_and_value_overrides():
    cfg = load_config(["match=video", "match.motion_weight=0.3", "output.fps=12.5", "window.blend=cosine"])
    assert (cfg.match.mode, cfg.match.motion_weight, cfg.output.fps, cfg.window.blend) == ("video", 0.3, 12.5, "cosine")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("match.mood=happy", "match.mood: unknown key"),
        ("+extra=1", "config extra"),
        ("output.size=big", "output.size"),
        ("match.mode=sideways", "use one of image, video"),
        ("match.motion_weight=1.5", "out of range"),
        ("seed=-1", "out of range"),  # a generator takes no negative seed: once an internal error mid-render
        ("backend=nope", "backend/nope"),
        ("backend.grid_divisions=2", "backend.grid_divisions"),
        ("backend.deformer=arap", "use one of lbs"),
    ],
)
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(FarmError, match=needle.replace("+", r"\+")):
        load_config([override])


def test_overlap_must_be_smaller_than_length():
    with pytest.raises(FarmError, match="window.overlap"):
        load_config(["window.length=8", "window.overlap=8"])
