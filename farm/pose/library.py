"""The motion library: what a shot learns from its motion video alone (the performer's poses and
the people preflight counts in it), kept once per motion in the output store and reused by every
shot and every later run that needs it (issue 13.1).

An entry is `<root>/poses/<key>/` with `pose.parquet` (farm.pose.store's pose file) and
`info.json`, written last: an entry without it (an extraction that failed or was cut off) is
never read, and the next shot extracts again. The key is the motion's content (its sha256), the
pose options that change what is extracted (the parts tracked, thresholds, smoothing,
motion.subject) and the pose model and mediapipe version, so a changed video, setting or model
never meets an old entry. A richer entry serves a poorer request (issue 13.6): a shot that needs
the body alone takes an entry that also tracked hands and face, and leaves those out. Its body is
then Holistic's, which runs the same body model as plain Pose (on the ASL clip the two bodies are
equal to the bit).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from farm.pose.extract import POSE_PARTS, PoseOptions, PoseSequence
from farm.pose.store import read_parquet, write_parquet
from farm.storage import Storage

POSES = "poses"
POSE_FILE = "pose.parquet"
INFO = "info.json"
VERSION = 1  # of the entry's layout; a new one makes new keys


@dataclass(frozen=True)
class MotionEntry:
    """A motion's poses and preflight's people count, as extracted once. parts: the pose parts the
    extraction tracked (farm.pose.extract.POSE_PARTS); the poses may hold fewer (see lookup)."""

    poses: PoseSequence
    people: tuple[int, str]
    parts: tuple[str, ...]


def library_key(motion_sha256: str, options: PoseOptions, model: str, rotation: int = 0) -> str:
    """The key of the entry an extraction of the motion with `options` is kept under. rotation: the
    video's display rotation (probe_video), in the key only when there is one: entries made before
    frames were turned upright hold a turned video's poses sideways, and are not taken."""
    import mediapipe

    doc = {"version": VERSION, "motion": motion_sha256, "options": dataclasses.asdict(options), "model": model,
           "mediapipe": mediapipe.__version__}
    if rotation:
        doc["rotation"] = rotation
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def lookup(store: Storage, root: str, motion_sha256: str, options: PoseOptions,
           model: str, rotation: int = 0) -> tuple[str, MotionEntry] | None:
    """The entry that serves an extraction of the motion with `options`, and its key: the entry
    extracted with them, else one extracted with the same settings and more parts (fewest extra
    parts first, in POSE_PARTS order). Its poses hold only the parts `options` track (the others
    all zeros, as an extraction without them leaves them). None when no entry serves (or none can
    be read: it is made again)."""
    for richer in _richer(options):
        key = library_key(motion_sha256, richer, model, rotation)
        found = _read(store, root, key)
        if found is not None:
            poses, people = found
            return key, MotionEntry(poses.only(options.parts()), people, richer.parts())
    return None


def keep(store: Storage, root: str, key: str, entry: MotionEntry, motion: str) -> None:
    """Store an entry (the pose file first, info.json last). motion: the video as the user gave
    it, recorded for people reading the library."""
    folder = Storage.join(root, POSES, key)
    with tempfile.TemporaryDirectory(prefix="farm-library-") as scratch:
        local = Path(scratch) / POSE_FILE
        write_parquet(entry.poses, local)
        store.put_file(local, Storage.join(folder, POSE_FILE))
    info = {"version": VERSION, "motion": motion, "frames": len(entry.poses), "people": list(entry.people),
            "subject": entry.poses.subject, "parts": list(entry.parts)}
    store.put_bytes(json.dumps(info, indent=1).encode(), Storage.join(folder, INFO))


def _richer(options: PoseOptions) -> list[PoseOptions]:
    """options, then options with more parts tracked, fewest extra parts first."""
    missing = [part for part in POSE_PARTS if part not in options.parts()]
    extras = [chosen for count in range(len(missing) + 1) for chosen in itertools.combinations(missing, count)]
    return [dataclasses.replace(options, **dict.fromkeys(chosen, True)) for chosen in extras]


def _read(store: Storage, root: str, key: str) -> tuple[PoseSequence, tuple[int, str]] | None:
    """The poses and people count of the entry `key`, None when there is none or it cannot be read."""
    folder = Storage.join(root, POSES, key)
    info_uri = Storage.join(folder, INFO)
    if not store.exists(info_uri):
        return None
    try:
        info = json.loads(store.get_bytes(info_uri))
        with tempfile.TemporaryDirectory(prefix="farm-library-") as scratch:
            local = Path(scratch) / POSE_FILE
            local.write_bytes(store.get_bytes(Storage.join(folder, POSE_FILE)))
            poses = read_parquet(local)
        count, note = info["people"]
        return dataclasses.replace(poses, subject=info.get("subject")), (int(count), str(note))
    except Exception:  # noqa: BLE001 - a damaged entry is extracted again, never trusted
        return None
