"""Named motions of the motion library (issue 13.1): `farm library add VIDEO --name NAME`,
`farm library list`, and `motion: library:NAME` in campaign files.

The library of an output store is `OUT/library/`. farm.pose.library keeps its extracted poses
(`poses/<key>/`, keyed by content, so every shot reuses them whether or not the motion has a
name). This module keeps the named motions: `motions/<NAME>/` holds a copy of the video and
`motion.json` (its name, tags, rights, probe and hash), written last, so a name whose copy was cut
off is not in the library. Adding a motion also extracts its poses with the operator's pose
settings (every part they allow: the entry serves the puppet's body-only request and
Wan-Animate's whole-body one alike), so the first campaign that uses it starts rendering at once.

A campaign shot with `motion: library:NAME` renders the stored copy, and the motion's rights fill
in the rights the shot does not give itself (motion_source, motion_consent, license, usage): the
rights travel with the asset into every shot's manifest.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from farm.config import FarmConfig
from farm.errors import FarmError
from farm.media.probe import sha256_file
from farm.pose import library as poses
from farm.shot.inputs import as_given, fetch_input, probe_motion
from farm.shot.plan import extract_in_process
from farm.shot.tools import pose_options, storage_for
from farm.shot.types import Reporter, Shot, Silent
from farm.storage import Storage
from farm.types import LIBRARY_PREFIX, MOTION_NAME, check_motion_name, library_name

LIBRARY = "library"  # OUT/library: shared by the campaigns of OUT
MOTIONS = "motions"
RECORD = "motion.json"
# The rights a motion carries: those of the motion itself (consent is the performer's).
RIGHTS = ("motion_source", "motion_consent", "license", "usage")


@dataclass(frozen=True)
class Motion:
    """A named motion of the library, as motion.json records it."""

    name: str
    video: str  # the stored copy: what shots render
    source: str  # the video as it was added
    sha256: str
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    added: str
    tags: tuple[str, ...] = ()
    rights: dict = field(default_factory=dict)
    poses: str | None = None  # the pose entry made when it was added (farm.pose.library key)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "tags": list(self.tags)}


def library_root(out_root: str | Path) -> str:
    return Storage.join(str(out_root), LIBRARY)


def motion_rights(given: dict, subject: str) -> dict:
    """The rights a motion may carry; `consent` is the performer's, so it is kept as motion_consent."""
    rights = {}
    for key, value in given.items():
        key = "motion_consent" if key == "consent" else key
        if key not in RIGHTS:
            raise FarmError(f"{subject} {key}", "is not a right of a motion",
                            f"give any of {', '.join(RIGHTS)} (the character's rights belong to each shot)")
        rights[key] = value
    return rights


def add_motion(
    video: str | Path,
    name: str,
    out_root: str | Path,
    cfg: FarmConfig,
    *,
    tags: tuple[str, ...] = (),
    rights: dict | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> Motion:
    """Copy a video into the library as NAME, extract its poses into the library, and record it
    (motion.json last). A name already there is refused unless `force` (then it is replaced)."""
    reporter = reporter or Silent()
    check_motion_name(name, "--name")
    rights = motion_rights(dict(rights or {}), "--rights")
    store = storage_for(cfg)
    folder = Storage.join(library_root(out_root), MOTIONS, name)
    if not force and store.exists(Storage.join(folder, RECORD)):
        raise FarmError(f"library:{name}", f"is already in the motion library {library_root(out_root)}",
                        "give another --name, or --force to replace it")
    # 1. The video, checked as a shot's motion is, and copied into the library
    local = fetch_input(video, store, cfg)
    with as_given({local: video}):
        probe = probe_motion(local, cfg)
    sha = sha256_file(local)
    copy = Storage.join(folder, "motion" + (Path(str(video)).suffix.lower() or ".mp4"))
    store.put_file(local, copy)

    # 2. Its poses and people count, once, with every part the operator's pose settings allow: a
    #    richer entry serves every backend (the puppet reads the body of it, Wan-Animate all of it).
    options = pose_options(cfg)
    found = poses.lookup(store, library_root(out_root), sha, options, cfg.pose.model, probe.rotation)
    if found is not None:
        key = found[0]
    else:
        from farm.qa.preflight import count_people

        reporter.stage("pose", probe.frame_count)
        with as_given({local: video}):
            extracted = extract_in_process(local, probe.frame_count, options, reporter)
            people = count_people(local, extracted)
        key = poses.library_key(sha, options, cfg.pose.model, probe.rotation)
        poses.keep(store, library_root(out_root), key, poses.MotionEntry(extracted, people, options.parts()), str(video))

    # 3. The record, last
    motion = Motion(
        name=name, video=copy, source=str(video), sha256=sha, frames=probe.frame_count, fps=round(probe.fps, 3),
        width=probe.width, height=probe.height, duration_s=round(probe.frame_count / probe.fps, 3),
        added=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), tags=tuple(tags), rights=rights, poses=key,
    )
    store.put_bytes(json.dumps(motion.to_dict(), indent=1).encode(), Storage.join(folder, RECORD))
    return motion


def list_motions(out_root: str | Path, store: Storage) -> list[Motion]:
    """Every named motion of OUT's library, by name (a name without motion.json is not listed)."""
    root = Storage.join(library_root(out_root), MOTIONS)
    found = []
    for uri in store.list(root):
        if uri.endswith("/" + RECORD) and uri.count("/") == root.rstrip("/").count("/") + 2:
            found.append(_read(store, uri))
    return sorted(found, key=lambda m: m.name)


def find_motion(name: str, out_root: str | Path, store: Storage) -> Motion:
    """The named motion, or a FarmError that says how to add it."""
    uri = Storage.join(library_root(out_root), MOTIONS, name, RECORD)
    if not MOTION_NAME.match(name) or not store.exists(uri):
        raise FarmError(f"motion {LIBRARY_PREFIX}{name}", f"is not in the motion library {library_root(out_root)}",
                        f"add it with `farm library add VIDEO --name {name} -o {out_root}` "
                        f"(`farm library list -o {out_root}` shows what is there)")
    return _read(store, uri)


def resolve_shot(shot: Shot, out_root: str | Path, store: Storage, found: dict[str, Motion]) -> Shot:
    """A shot whose motion is `library:NAME` as it renders: the stored copy, with the motion's
    rights under its own. found: motions already read (a campaign reads each name once)."""
    name = library_name(shot.motion)
    if name is None:
        return shot
    if name not in found:
        found[name] = find_motion(name, out_root, store)
    motion = found[name]
    return dataclasses.replace(shot, motion=motion.video, rights={**motion.rights, **shot.rights}, library=name)


def _read(store: Storage, uri: str) -> Motion:
    try:
        doc = json.loads(store.get_bytes(uri))
        doc["tags"] = tuple(doc.get("tags") or ())
        return Motion(**{f.name: doc[f.name] for f in dataclasses.fields(Motion) if f.name in doc})
    except (ValueError, TypeError, KeyError) as exc:
        raise FarmError(uri, f"is not a motion record ({exc})", "add the motion again with farm library add --force") from None
