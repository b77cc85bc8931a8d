"""Local files: reads checked against the allowed roots, atomic writes, folder listing and removal.

Writes go to a hidden temporary name in the target folder and are renamed over the target
(`os.replace`), so a reader sees the old file or the new one, never a partial one.
"""
from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from farm.errors import FarmError

TEMP_SUFFIX = ".partial"


def check_roots(path: Path, roots: tuple[Path, ...], uri: str) -> None:
    """Refuse a path outside every root (resolved first, so `..` and symlinks cannot escape)."""
    resolved = path.resolve()
    if roots and not any(resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise FarmError(uri, f"is outside the allowed input roots ({allowed})", "move the file under storage.roots or add its folder there")


def require_file(path: Path, uri: str, max_bytes: int | None = None) -> Path:
    """The path of a regular file (no folder, device, pipe or socket), at most max_bytes long."""
    if path.is_dir():
        raise FarmError(uri, "is a folder, not a file", "give the path of a file")
    if not path.exists():
        raise FarmError(uri, "file not found", "check the path")
    if not path.is_file():  # /dev/zero, a FIFO, a socket: reading it would never end or block
        raise FarmError(uri, "is not a regular file (a device, pipe or socket)", "give the path of a file")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise FarmError(uri, f"is {_mb(size)}, above the farm's limit of {_mb(max_bytes)}",
                        "give a smaller file (the operator sets the limit with qa.max_input_mb)")
    return path


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def create_exclusive(path: Path, data: bytes) -> bool:
    """Write `data` to `path` only if no file is there: True when this call made it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise os_error(str(path), "write", exc) from exc


def evict_least_recent(folder: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used files under `folder` until they total at most `max_bytes`
    (`keep`, the file just fetched, stays). Returns what was removed."""
    if not folder.is_dir():
        return []
    entries = []
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not is_temp(path):
                stat = path.stat()
                entries.append((max(stat.st_atime, stat.st_mtime), stat.st_size, path))
        except FileNotFoundError:  # another process evicted it meanwhile
            continue
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


def read_bytes(path: Path, uri: str) -> bytes:
    require_file(path, uri)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise os_error(uri, "read", exc) from exc


def write_bytes(path: Path, data: bytes, uri: str) -> None:
    write_atomically(path, lambda out: out.write(data), uri)


def copy_file(source: Path, target: Path, uri: str) -> None:
    """Copy `source` to `target` atomically; nothing to do when both are the same file."""
    require_file(source, str(source))
    if target.exists() and source.resolve() == target.resolve():
        return
    try:
        with source.open("rb") as src:
            write_atomically(target, lambda out: shutil.copyfileobj(src, out, 1 << 20), uri)
    except OSError as exc:
        raise os_error(str(source), "read", exc) from exc


def list_files(folder: Path) -> list[str]:
    """Every file under `folder` (recursive) as a path string, sorted; [] when there is no such folder."""
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and not is_temp(p))


def delete_folder(folder: Path, uri: str) -> None:
    if not folder.is_dir():
        return
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        raise os_error(uri, "delete", exc) from exc


def temp_path(target: Path) -> Path:
    """A fresh hidden name next to `target`, skipped by `list_files`."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def os_error(uri: str, action: str, exc: OSError) -> FarmError:
    if isinstance(exc, PermissionError):
        return FarmError(uri, f"cannot {action}: permission denied", "check the permissions of the file and its folder")
    return FarmError(uri, f"cannot {action}: {exc.strerror or exc}", "check the path and the free disk space")


def write_atomically(target: Path, write: Callable[[BinaryIO], object], uri: str) -> None:
    """Write through `write(file)` to a fresh temporary name, then rename: readers see the old
    file or the whole new one, and concurrent writers never share a temporary file."""
    temp = temp_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 lets the umask set the final mode, as a plain open() would.
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise os_error(uri, "write", exc) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def is_temp(path: Path) -> bool:
    """A file being written (write_atomically's temporary name)."""
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)
