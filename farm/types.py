"""Value types shared by the pose, character, QA and backend stages, and what a shot id may be
(the bottom layer: imports nothing of farm but its error)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from farm.errors import FarmError

# Shot ids name folders: letters, digits, '-', '_', '.'; never a path. \Z: no trailing newline, unlike $.
SHOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


@dataclass(frozen=True)
class Character:
    """The character to animate, in the pixels of its own image.

    image: (H, W, 3) uint8 RGB. mask: (H, W) bool, True on the character.
    joints: (15, 3) float32 rest pose on the rig of `farm.rig` (x, y, confidence).
    source: how the joints were obtained ("detected", "skeleton_file", "proposed").
    """

    image: np.ndarray
    mask: np.ndarray
    joints: np.ndarray
    source: str
    sha256: str


@dataclass(frozen=True)
class Canvas:
    """The output frame and how character-image pixels map onto it.

    width, height: output size in pixels (even numbers).
    scale: output pixels per character-image pixel for the character's body.
    mode: "image" (character keeps its own background and place) or "video" (the character takes
    the performer's place and framing in a frame of the reference video's shape).
    """

    width: int
    height: int
    scale: float
    mode: str


def check_shot_id(shot_id: str | None) -> None:
    """Shot ids name folders: letters, digits, '-', '_', '.'; never a path."""
    if shot_id is not None and not SHOT_ID.match(shot_id):
        raise FarmError(
            f"shot id {shot_id!r}", "is not a valid id", "use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )


# A named motion of the motion library (farm.library), as a campaign's `motion: library:NAME` names it.
LIBRARY_PREFIX = "library:"
MOTION_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
MOTION_NAME_RULE = "use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"


def library_name(value: object) -> str | None:
    """NAME of a `library:NAME` motion; None for anything else."""
    if isinstance(value, str) and value.startswith(LIBRARY_PREFIX):
        return value.removeprefix(LIBRARY_PREFIX)
    return None


def check_motion_name(name: str, subject: str) -> str:
    if not MOTION_NAME.match(name):
        raise FarmError(subject, f"{name!r} is not a motion name", MOTION_NAME_RULE)
    return name
