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


def require_file(path: Path, uri: str) -> Path:
    if path.is_dir():
        raise FarmError(uri, "is a folder, not a file", "give the path of a file")
    if not path.is_file():
        raise FarmError(uri, "file not found", "check the path")
    return path


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
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and not _is_temp(p))


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


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)
