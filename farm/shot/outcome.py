"""How a shot ends: its result, the commit of its record, failures, reuse, and what the farm removes."""
from __future__ import annotations

import json
import os
import shutil
import traceback
import zlib
from dataclasses import InitVar, dataclass, field
from pathlib import Path

from farm.config import FarmConfig
from farm.errors import FarmError
from farm.manifest import SCHEMA_VERSION, write_json_atomic
from farm.media.probe import sha256_file
from farm.report import THUMB
from farm.shot.inputs import fallback_id
from farm.shot.tools import stage_root, storage_for
from farm.shot.types import FAILED, MANIFEST, MARKER, REPORT, SEGMENTS, TAKE, VIDEO, Shot
from farm.storage import Storage
from farm.storage.local import create_exclusive, is_temp
from farm.types import check_shot_id


@dataclass
class ShotResult:
    """folder: the local folder the shot was made in (the output itself for local outputs, a
    staging copy for s3:// outputs); uri: the shot's folder in the output store."""

    shot_id: str
    status: str  # "succeeded" | "failed" | "reused"
    folder: Path
    record: InitVar[dict]  # the shot's manifest: `manifest`
    error: str | None = None
    uri: str = ""
    _packed: bytes = field(init=False, repr=False)

    def __post_init__(self, record: dict) -> None:
        self.manifest = record

    @property
    def manifest(self) -> dict:
        """The shot's record, read back from the compressed copy the result holds: a campaign's
        driver keeps thousands of results, so each keeps ~2 KB, not a manifest's ~50 KB of dicts."""
        return json.loads(zlib.decompress(self._packed))

    @manifest.setter
    def manifest(self, record: dict) -> None:
        self._packed = zlib.compress(json.dumps(record, separators=(",", ":")).encode(), 6)

    @property
    def video(self) -> Path | None:
        """The local video file, when there is one (a reused s3:// shot has none locally)."""
        path = self.folder / VIDEO
        return path if self.status != "failed" and path.exists() else None

    @property
    def video_uri(self) -> str | None:
        return None if self.status == "failed" else Storage.join(self.uri or str(self.folder), VIDEO)


def claim(folder: Path, store: Storage, uri: str) -> None:
    """Make sure the shot's output folder is the farm's before anything is written there: absent or
    empty (then marked as the farm's), or holding the farm's marker or manifest. Anything else is
    someone's folder (e.g. `--id poses` next to `farm pose`'s output) and is refused, untouched."""
    remote = Storage.is_remote(uri)
    if remote:
        names = {found.removeprefix(uri.rstrip("/") + "/").split("/")[0] for found in store.list(uri)}
    else:  # (a file being written by another run of the farm, e.g. an identical shot's marker, is no one else's)
        names = {child.name for child in folder.iterdir() if not is_temp(child)} if folder.is_dir() else set()
    if names and MARKER not in names and not _farm_manifest(store, uri, MANIFEST in names):
        shown = ", ".join(sorted(names)[:3]) + (", …" if len(names) > 3 else "")
        raise FarmError(f"output {uri}", f"is a folder the farm did not make (it holds {shown})",
                        "choose another shot id or output folder: the farm never writes into, or deletes from, folders it did not make")
    folder.mkdir(parents=True, exist_ok=True)
    if MARKER not in names:
        mark = b"motion-farm shot folder\n"
        create_exclusive(folder / MARKER, mark)  # made once, whoever is first; never a half-written file
        if remote:
            store.put_bytes(mark, Storage.join(uri, MARKER))


def _farm_manifest(store: Storage, uri: str, present: bool) -> bool:
    if not present:
        return False
    try:
        manifest = json.loads(store.get_bytes(Storage.join(uri, MANIFEST)))
    except (FarmError, ValueError):
        return False
    return isinstance(manifest, dict) and "schema_version" in manifest and "shot_id" in manifest


def committed(store: Storage, uri: str) -> dict | None:
    """The manifest now in the shot's output folder, if it holds one the farm can read."""
    try:
        target = Storage.join(uri, MANIFEST)
        return json.loads(store.get_bytes(target)) if store.exists(target) else None
    except (FarmError, ValueError):
        return None


def commit(record: dict, take: Path, folder: Path, uri: str, store: Storage) -> ShotResult:
    """Publish a finished take: its files replace those of the last take, the manifest (the commit
    marker) last, then the last take's files the new one does not have go. Until the manifest is
    replaced, a reader finds the last take's manifest. For s3:// outputs the files are uploaded
    (big ones in parts) before the same swap in the local staging folder."""
    previous = committed(store, uri)
    write_json_atomic(take / MANIFEST, record)
    made = sorted(p.relative_to(take) for p in take.rglob("*") if p.is_file() and p.name != MANIFEST)
    if Storage.is_remote(uri):
        for path in made:
            store.put_file(take / path, Storage.join(uri, *path.parts))
        store.put_file(take / MANIFEST, Storage.join(uri, MANIFEST))
    for path in made:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(take / path, folder / path)
    os.replace(take / MANIFEST, folder / MANIFEST)
    for stale in sorted(_published(previous) - {str(p) for p in made}):
        (folder / stale).unlink(missing_ok=True)
        for parent in (folder / stale).parents:  # and the folders that held only such files
            if parent == folder or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()
        if Storage.is_remote(uri):
            store.delete(Storage.join(uri, stale))
    for left in folder.glob(f"{TAKE}*"):  # this one, and any a crashed run left (the output's lease is ours)
        shutil.rmtree(left, ignore_errors=True)
    error = record["error"]["message"] if record["error"] else None
    return ShotResult(record["shot_id"], record["status"], folder, record, error, uri=uri)


def _published(manifest: dict | None) -> set[str]:
    """The files a committed take published (its artifacts, report and thumbnail) and a failure's
    record: what a new take may replace. Paths that leave the folder are ignored (a manifest is
    read from the store, and the farm deletes only its own files)."""
    names = {REPORT, THUMB, FAILED}
    for item in (manifest or {}).get("artifacts") or []:
        path = str(item.get("path", "")) if isinstance(item, dict) else ""
        if path and not Path(path).is_absolute() and ".." not in Path(path).parts:
            names.add(path)
    return names


def fail_shot(
    shot: Shot, folder: Path, record: dict, timings: dict, exc: BaseException, *, uri: str = "", cfg: FarmConfig | None = None,
    take: Path | None = None,
) -> ShotResult:
    """Record a failed shot: the error, and nothing of this run's take (window checkpoints stay, so a
    rerun after a transient fault does not redo them; segments are made again from them)."""
    shot_id = record.get("shot_id") or folder.name
    message = str(exc.for_shot(shot_id)) if isinstance(exc, FarmError) else f"internal error: {type(exc).__name__}: {exc}"
    record.update(shot_id=shot_id, status="failed", error={"type": type(exc).__name__, "message": message})
    if not isinstance(exc, FarmError):
        record["error"]["traceback"] = "".join(traceback.format_exception(exc, limit=8))
    record["timings"] = {k: round(v, 3) for k, v in timings.items()}
    if take is not None:
        shutil.rmtree(take, ignore_errors=True)
    shutil.rmtree(folder / SEGMENTS, ignore_errors=True)
    uri = uri or str(folder)
    store = storage_for(cfg) if cfg is not None else Storage()
    if Storage.is_remote(uri):
        store.delete_prefix(Storage.join(uri, SEGMENTS))
    return _record_failed(record, folder, uri, store)


def record_failure(shot: Shot, cfg: FarmConfig | None, out_root: Path | str, error: FarmError) -> ShotResult:
    """A shot that failed before it could start (e.g. its config overrides are wrong): still one
    failure record with the reason, like any other failed shot, if its folder is the farm's."""
    check_shot_id(shot.shot_id)
    shot_id = shot.shot_id or fallback_id(shot, cfg)
    record = {
        "schema_version": SCHEMA_VERSION, "shot_id": shot_id, "status": "failed", "prompt": shot.prompt,
        "rights": shot.rights, "error": {"type": type(error).__name__, "message": str(error.for_shot(shot_id))},
    }
    uri = Storage.join(str(out_root), shot_id)
    store = storage_for(cfg) if cfg is not None else Storage()
    return _record_failed(record, stage_root(out_root, cfg) / shot_id, uri, store)


def _record_failed(record: dict, folder: Path, uri: str, store: Storage) -> ShotResult:
    """Write a failure's record: as the manifest, unless the folder holds a good take, which it
    must not replace; then beside it, as failed.json."""
    try:
        claim(folder, store, uri)
    except FarmError as refused:  # not the farm's folder: nothing is written, the result says both
        return ShotResult(record["shot_id"], "failed", folder, record, f"{record['error']['message']}; {refused}", uri=uri)
    previous = committed(store, uri)
    name = FAILED if previous and previous.get("status") == "succeeded" else MANIFEST
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / name, record)
    if Storage.is_remote(uri):
        store.put_file(folder / name, Storage.join(uri, name))
    return ShotResult(record["shot_id"], "failed", folder, record, record["error"]["message"], uri=uri)


def finished(store: Storage, uri: str, content_key: str) -> dict | None:
    """The manifest of a finished render of exactly this content in the store, else None (a
    named shot whose inputs or config changed is rendered again)."""
    try:
        if not store.exists(Storage.join(uri, MANIFEST)):
            return None
        manifest = json.loads(store.get_bytes(Storage.join(uri, MANIFEST)))
    except (FarmError, ValueError):
        return None
    done = manifest.get("status") == "succeeded" and manifest.get("content_key") == content_key
    return manifest if done and store.exists(Storage.join(uri, VIDEO)) else None


def reuse_verdict(manifest: dict, cfg: FarmConfig) -> dict:
    """A finished shot's record with its QA verdict worked out again under this run's thresholds
    (the manifest on disk keeps the verdict of the render); unchanged when it has no metrics."""
    from farm.qa.measure import verdict

    metrics = manifest.get("metrics") or {}
    if "windows" not in metrics or "qa" not in manifest:
        return manifest
    reasons = verdict(metrics, metrics["windows"], cfg.qa)
    return {**manifest, "qa": {"needs_rerender": bool(reasons), "reasons": reasons}}


def artifacts(take: Path) -> list[dict]:
    """Every file of a take, with its hash (paths relative to the shot folder)."""
    found = []
    for path in sorted(p for p in take.rglob("*") if p.is_file() and p.name != MANIFEST):
        found.append({"name": path.name, "path": str(path.relative_to(take)), "sha256": sha256_file(path), "bytes": path.stat().st_size})
    return found
