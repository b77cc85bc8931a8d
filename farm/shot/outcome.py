"""How a shot ends: its result, the commit of its record, failures, reuse, and what the farm removes."""
from __future__ import annotations

import json
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

from farm.config import FarmConfig
from farm.errors import FarmError
from farm.manifest import SCHEMA_VERSION, write_json_atomic
from farm.media.probe import sha256_file
from farm.shot.inputs import fallback_id
from farm.shot.tools import stage_root, storage_for
from farm.shot.types import MANIFEST, VIDEO, WINDOWS, WORK, Shot, check_shot_id
from farm.storage import Storage


@dataclass
class ShotResult:
    """folder: the local folder the shot was made in (the output itself for local outputs, a
    staging copy for s3:// outputs); uri: the shot's folder in the output store."""

    shot_id: str
    status: str  # "succeeded" | "failed" | "reused"
    folder: Path
    manifest: dict
    error: str | None = None
    uri: str = ""

    @property
    def video(self) -> Path | None:
        """The local video file, when there is one (a reused s3:// shot has none locally)."""
        path = self.folder / VIDEO
        return path if self.status != "failed" and path.exists() else None

    @property
    def video_uri(self) -> str | None:
        return None if self.status == "failed" else Storage.join(self.uri or str(self.folder), VIDEO)


def commit(record: dict, folder: Path, uri: str = "", store: Storage | None = None) -> ShotResult:
    """Write the manifest, the shot's commit marker. With a store (s3:// output), every other file
    of the shot folder is uploaded first and the manifest last, so a reader never finds a manifest
    whose files are not there yet."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / MANIFEST, record)
    if store is not None:
        made = (p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
        for path in sorted(p for p in made if p.relative_to(folder).parts[0] not in WORK):
            store.put_file(path, Storage.join(uri, *path.relative_to(folder).parts))
        store.put_file(folder / MANIFEST, Storage.join(uri, MANIFEST))
    error = record["error"]["message"] if record["error"] else None
    return ShotResult(record["shot_id"], record["status"], folder, record, error, uri=uri or str(folder))


def fail_shot(
    shot: Shot, folder: Path, record: dict, timings: dict, exc: BaseException, *, uri: str = "", cfg: FarmConfig | None = None
) -> ShotResult:
    """Record a failed shot: the error in the manifest, no video or other artifact left (window
    checkpoints stay, so a rerun after a transient fault does not redo them)."""
    shot_id = record.get("shot_id") or folder.name
    message = str(exc.for_shot(shot_id)) if isinstance(exc, FarmError) else f"internal error: {type(exc).__name__}: {exc}"
    record.update(shot_id=shot_id, status="failed", error={"type": type(exc).__name__, "message": message})
    if not isinstance(exc, FarmError):
        record["error"]["traceback"] = "".join(traceback.format_exception(exc, limit=8))
    record["timings"] = {k: round(v, 3) for k, v in timings.items()}
    discard_outputs(folder, keep=(WINDOWS,))  # segments are made again from the checkpoints
    remote = bool(cfg is not None and uri and Storage.is_remote(uri))
    if remote:
        clear_remote(storage_for(cfg), uri)
    return commit(record, folder, uri or str(folder), storage_for(cfg) if remote else None)


def record_failure(shot: Shot, cfg: FarmConfig | None, out_root: Path | str, error: FarmError) -> ShotResult:
    """A shot that failed before it could start (e.g. its config overrides are wrong): still one
    manifest with `status: failed` and the reason, like any other failed shot."""
    check_shot_id(shot.shot_id)
    shot_id = shot.shot_id or fallback_id(shot, cfg)
    record = {
        "schema_version": SCHEMA_VERSION, "shot_id": shot_id, "status": "failed", "prompt": shot.prompt,
        "rights": shot.rights, "error": {"type": type(error).__name__, "message": str(error.for_shot(shot_id))},
    }
    uri = Storage.join(str(out_root), shot_id)
    store = storage_for(cfg) if cfg is not None else Storage()
    return commit(record, stage_root(out_root, cfg) / shot_id, uri, store if Storage.is_remote(uri) else None)


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


def reset(folder: Path, store: Storage, uri: str) -> None:
    """Clear what an earlier, different or unfinished render left, except window checkpoints,
    here and (for s3:// outputs) in the store, so no stale video sits next to a new manifest."""
    discard_outputs(folder)
    (folder / MANIFEST).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    if Storage.is_remote(uri):
        clear_remote(store, uri)


def clear_remote(store: Storage, uri: str) -> None:
    """Remove a shot's files from the store, except its window checkpoints (segments go: they are
    made again from the checkpoints)."""
    keep = Storage.join(uri, WINDOWS) + "/"
    for found in store.list(uri):
        if not found.startswith(keep):
            store.delete(found)


def discard_outputs(folder: Path, keep: tuple[str, ...] = WORK) -> None:
    """Remove what an earlier run of the shot left here, except the manifest and `keep`."""
    if folder.exists():
        for child in folder.iterdir():
            if child.name not in (MANIFEST, *keep):
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def artifacts(folder: Path) -> list[dict]:
    """Every file the shot keeps, with its hash; window checkpoints are not kept (removed once committed)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and p.relative_to(folder).parts[0] not in WORK):
        found.append({"name": path.name, "path": str(path.relative_to(folder)), "sha256": sha256_file(path), "bytes": path.stat().st_size})
    return found
