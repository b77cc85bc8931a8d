"""Pose sequences and rig targets as Parquet files, one row per frame.

Pose file (write_parquet / read_parquet), columns:

    frame       int32                          index of the frame in the source video
    body        fixed_size_list<float32>[132]  33 landmarks x (x, y, z, visibility), landmark-major
    left_hand   fixed_size_list<float32>[63]   21 landmarks x (x, y, conf)
    right_hand  fixed_size_list<float32>[63]   21 landmarks x (x, y, conf)
    face        fixed_size_list<float32>[1404] 468 landmarks x (x, y, conf)

Rig file (write_rig_parquet / read_rig_parquet), columns:

    frame       int32                          0-based index of the target frame
    <joint>     struct<x: float32, y: float32, conf: float32>, one column per farm.rig.JOINTS entry,
                in that order (pelvis, neck, head, right_shoulder, ...)

Units and conventions are those of farm.pose.extract.PoseSequence and farm.rig: pixels, x right,
y down. The schema metadata key b"motion_farm" holds JSON with "kind" ("pose" or "rig"),
"version" (1), "fps", "width", "height" and, for poses, "start" (the frame column repeats it, but
an empty sequence still needs it).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from farm.errors import FarmError
from farm.pose.extract import BODY_POINTS, FACE_POINTS, HAND_POINTS, PoseSequence
from farm.rig import JOINTS

METADATA_KEY = b"motion_farm"
VERSION = 1
_POSE_PARTS = {"body": (BODY_POINTS, 4), "left_hand": (HAND_POINTS, 3),
               "right_hand": (HAND_POINTS, 3), "face": (FACE_POINTS, 3)}
_RIG_FIELDS = ("x", "y", "conf")


def write_parquet(seq: PoseSequence, path: str | Path) -> None:
    """Write a PoseSequence; read_parquet gives it back bit for bit."""
    columns = {"frame": pa.array(np.arange(seq.start, seq.start + len(seq), dtype=np.int32))}
    for name, (points, channels) in _POSE_PARTS.items():
        flat = np.ascontiguousarray(getattr(seq, name), dtype=np.float32).reshape(-1)
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), points * channels)
    meta = {"kind": "pose", "version": VERSION, "fps": seq.fps, "width": seq.width,
            "height": seq.height, "start": seq.start}
    _write(columns, meta, path)


def read_parquet(path: str | Path) -> PoseSequence:
    """Read a file written by write_parquet."""
    table, meta = _read(path, kind="pose")
    parts = {}
    for name, (points, channels) in _POSE_PARTS.items():
        flat = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        parts[name] = flat.astype(np.float32, copy=False).reshape(-1, points, channels)
    return PoseSequence(**parts, fps=float(meta["fps"]), width=int(meta["width"]),
                        height=int(meta["height"]), start=int(meta["start"]))


def write_rig_parquet(joints: np.ndarray, path: str | Path, *, fps: float, width: int,
                      height: int) -> None:
    """Write (T, 15, 3) rig targets (x, y, conf in pixels of a width x height canvas)."""
    joints = np.asarray(joints, dtype=np.float32)
    if joints.ndim != 3 or joints.shape[1:] != (len(JOINTS), 3):
        raise ValueError(f"rig targets must be (T, {len(JOINTS)}, 3), got {joints.shape}")
    columns = {"frame": pa.array(np.arange(len(joints), dtype=np.int32))}
    for j, name in enumerate(JOINTS):
        columns[name] = pa.StructArray.from_arrays(
            [pa.array(joints[:, j, c]) for c in range(3)], names=list(_RIG_FIELDS))
    _write(columns, {"kind": "rig", "version": VERSION, "fps": fps, "width": width,
                     "height": height}, path)


def read_rig_parquet(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read a file written by write_rig_parquet.

    Returns ((T, 15, 3) float32 joints, {"fps": float, "width": int, "height": int})."""
    table, meta = _read(path, kind="rig")
    joints = np.empty((table.num_rows, len(JOINTS), 3), dtype=np.float32)
    for j, name in enumerate(JOINTS):
        column = table.column(name).combine_chunks()
        for c, field in enumerate(_RIG_FIELDS):
            joints[:, j, c] = column.field(field).to_numpy(zero_copy_only=False)
    return joints, {"fps": float(meta["fps"]), "width": int(meta["width"]),
                    "height": int(meta["height"])}


def _write(columns: dict[str, pa.Array], meta: dict, path: str | Path) -> None:
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(meta)})
    pq.write_table(table, str(path))


def _read(path: str | Path, *, kind: str) -> tuple[pa.Table, dict]:
    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowInvalid) as err:
        raise FarmError(path, f"cannot be read as Parquet ({err})",
                        "give a file written by farm.pose.store") from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    meta = json.loads(raw) if raw else {}
    if meta.get("kind") != kind or meta.get("version") != VERSION:
        found = f"{meta.get('kind')} v{meta.get('version')}" if meta else "no motion-farm metadata"
        writer = "write_rig_parquet" if kind == "rig" else "write_parquet"
        raise FarmError(path, f"is not a motion-farm {kind} file v{VERSION} ({found})",
                        f"write it with farm.pose.store.{writer}")
    return table, meta
