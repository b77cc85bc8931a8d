"""The campaign's record (DESIGN §9): `campaign.json` (counts and one entry per shot, rewritten as
shots finish, so `farm status` can follow a running campaign) and `campaign.parquet` (one row per
shot, written at the end, for any dataframe tool)."""
from __future__ import annotations

import calendar
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from farm.errors import FarmError
from farm.manifest import SCHEMA_VERSION, write_json_atomic
from farm.shot.outcome import ShotResult
from farm.storage import Storage
from farm.storage.local import write_atomically

CAMPAIGN_JSON = "campaign.json"
ISO = "%Y-%m-%dT%H:%M:%SZ"  # the times of campaign.json, UTC
CAMPAIGN_PARQUET = "campaign.parquet"
CANCEL = ".farm-cancel"  # `farm cancel` asks the run of the campaign folder that holds it to stop
RETAKES = "retakes.json"  # `farm requeue --flagged`: shot id -> the seed its shots render with from now on
# Shot metrics (manifest `metrics`, farm.qa.measure) that are columns of the campaign table.
QA_METRICS = ("pose_pck", "pose_oks", "joint_pck", "pose_detected", "jitter", "appearance_drift", "appearance_ssim", "seam_score",
              "overlap_overhead")

# campaign.parquet columns, in order, with their types.
COLUMNS = pa.schema(
    [
        ("shot_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("motion", pa.string()),
        ("character", pa.string()),
        ("seed", pa.int64()),
        ("frames", pa.int64()),
        ("fps", pa.float64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("windows_rendered", pa.int64()),
        ("windows_reused", pa.int64()),
        ("retakes", pa.int64()),  # windows rendered again after failing their check (qa.retakes)
        ("rig_error_px_max", pa.float64()),
        ("seconds", pa.float64()),
        # What its windows cost in this run: generator seconds times the GPUs / CPU cores held, and
        # money at the operator's prices (cost.gpu_hour, cost.cpu_hour; null without them).
        ("gpu_seconds", pa.float64()),
        ("cpu_seconds", pa.float64()),
        ("money", pa.float64()),
        *((metric, pa.float64()) for metric in QA_METRICS),
        ("pose_source", pa.string()),
        # The performer's poses in this run: "extracted", "reused" from the motion library, or null
        # (a reused shot, or a run without the library).
        ("poses", pa.string()),
        ("needs_rerender", pa.bool_()),
        ("qa_reasons", pa.list_(pa.string())),
        ("video", pa.string()),
        # Provenance: the watermark code the frames carry (to find the shot from a copy of its
        # video) and whether the video is signed with C2PA content credentials.
        ("watermark", pa.string()),
        ("signed", pa.bool_()),
        ("manifest", pa.string()),
        ("report", pa.string()),
        # Sweeps (farm sweep): the shot this render is a variant of, and its settings.
        ("sweep_of", pa.string()),
        ("settings", pa.string()),
    ]
)


def shot_row(result: ShotResult) -> dict:
    """One flat row of the campaign table from a shot's result and manifest."""
    m = result.manifest
    metrics = m.get("metrics") or {}
    windows = m.get("windows") or []
    inputs = m.get("inputs") or {}
    qa = m.get("qa") or {}
    reused = result.status == "reused"
    return {
        "shot_id": result.shot_id,
        "status": result.status,
        "error": result.error,
        "motion": (inputs.get("motion") or {}).get("uri"),
        "character": (inputs.get("character") or {}).get("uri"),
        "seed": (m.get("seeds") or [None])[0],
        "frames": metrics.get("frames"),
        "fps": metrics.get("fps"),
        "width": metrics.get("width"),
        "height": metrics.get("height"),
        "windows_rendered": 0 if reused else metrics.get("windows_rendered", 0),
        "windows_reused": len(windows) if reused else metrics.get("windows_reused", 0),
        "retakes": 0 if reused else metrics.get("retakes", 0),
        "rig_error_px_max": metrics.get("rig_error_px_max"),
        "seconds": 0.0 if reused else round(sum((m.get("timings") or {}).values()), 3),
        **_cost(m.get("cost") or {}, reused),
        **{metric: metrics.get(metric) for metric in QA_METRICS},
        "pose_source": metrics.get("pose_source"),
        "needs_rerender": qa.get("needs_rerender", False),
        "qa_reasons": qa.get("reasons", []),
        "poses": None if reused or not (library := m.get("motion_library")) else "reused" if library["reused"] else "extracted",
        "video": result.video_uri,
        "watermark": ((m.get("provenance") or {}).get("watermark") or {}).get("code"),
        "signed": bool(((m.get("provenance") or {}).get("c2pa") or {}).get("signed")),
        "manifest": Storage.join(result.uri or str(result.folder), "manifest.json"),
        "report": Storage.join(result.uri or str(result.folder), m["report"]) if m.get("report") else None,
    }


def _cost(cost: dict, reused: bool) -> dict:
    """A shot's cost columns: what this run spent on it (nothing for a reused shot)."""
    if reused:
        return {"gpu_seconds": 0.0, "cpu_seconds": 0.0, "money": None}
    return {"gpu_seconds": cost.get("gpu_seconds", 0.0), "cpu_seconds": cost.get("cpu_seconds", 0.0), "money": cost.get("money")}


@dataclass
class CampaignRecord:
    """campaign.json of one run, kept up to date as shots finish. folder: where it is written;
    with `store` and `uri` (an s3:// output) each write is also uploaded there."""

    folder: Path
    name: str
    total: int
    store: Storage | None = None
    uri: str = ""
    rows: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    # The shots not done yet, by their place in the campaign: {shot, state, windows_done, windows}.
    pending: dict[int, dict] = field(default_factory=dict)
    every: float = 2.0  # seconds between rewrites of campaign.json while only states change
    # The run's admission: the most shots allowed in flight at once, and the most there were.
    admission: dict | None = None
    # Nodes that got no more windows of this run (windows failed there runtime.bad_node_failures times in a row).
    bad_nodes: list[dict] = field(default_factory=list)
    # The campaign file this run rendered ({"path", "sha256"}; None for a sweep): what `farm requeue` runs again.
    source: dict | None = None
    # The Ray Job (submission id) whose driver ran this run, when `farm job` started it.
    ray_job: str | None = None
    _written: float = 0.0

    def queue(self, shots: list[str]) -> None:
        """Every shot of the run, queued, before any starts: `farm status` lists them all from the start."""
        self.pending = {i: {"shot": shot, "state": "queued", "windows_done": 0, "windows": None} for i, shot in enumerate(shots)}

    def state(self, position: int, state: str, windows_done: int = 0, windows: int | None = None) -> None:
        """A shot moved on (planning, rendering, encoding, finishing); written at most every `every` seconds."""
        if position in self.pending:
            self.pending[position].update(state=state, windows_done=windows_done, windows=windows)
        if time.monotonic() - self._written >= self.every:
            self.write()

    def add(self, result: ShotResult, extra: dict | None = None, position: int | None = None) -> None:
        """A finished shot; extra: more of its columns (a sweep's sweep_of and settings)."""
        self.pending.pop(position, None)
        self.rows.append({**shot_row(result), "sweep_of": None, "settings": None, **(extra or {})})
        self.write()

    def counts(self) -> dict:
        status = [r["status"] for r in self.rows]
        return {
            "shots_total": self.total,
            "shots_done": len(self.rows),
            "shots_succeeded": status.count("succeeded"),
            "shots_reused": status.count("reused"),
            "shots_failed": status.count("failed"),
            "shots_flagged": sum(1 for r in self.rows if r.get("needs_rerender")),
            "poses_extracted": sum(1 for r in self.rows if r.get("poses") == "extracted"),
            "poses_reused": sum(1 for r in self.rows if r.get("poses") == "reused"),
            "windows_rendered": sum(r["windows_rendered"] or 0 for r in self.rows),
            "windows_reused": sum(r["windows_reused"] or 0 for r in self.rows),
            "gpu_seconds": round(sum(r["gpu_seconds"] or 0.0 for r in self.rows), 3),
            "cpu_seconds": round(sum(r["cpu_seconds"] or 0.0 for r in self.rows), 3),
            "money": round(sum(priced), 6) if (priced := [r["money"] for r in self.rows if r["money"] is not None]) else None,
        }

    def write(self, *, finished: bool = False, interrupted: bool = False, cancelled: bool = False) -> dict:
        """finished: the run is over (interrupted: before every shot was done; cancelled: stopped by
        `farm cancel`)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "status": ("cancelled" if cancelled else "interrupted" if interrupted else "finished") if finished else "running",
            "started": _iso(self.started),
            "finished": _iso(time.time()) if finished else None,
            "counts": self.counts(),
            "shots": self.rows,
            "pending": list(self.pending.values()),  # not done (yet): their last state
            "admission": self.admission,
            "bad_nodes": self.bad_nodes,
            "source": self.source,
            "ray_job": self.ray_job,
        }
        write_json_atomic(self.folder / CAMPAIGN_JSON, doc)
        self._written = time.monotonic()
        if finished:
            table = pa.Table.from_pylist(self.rows, schema=COLUMNS)
            target = self.folder / CAMPAIGN_PARQUET
            write_atomically(target, lambda out: pq.write_table(table, out), str(target))
            if self.store is not None:
                self.store.put_file(self.folder / CAMPAIGN_PARQUET, Storage.join(self.uri, CAMPAIGN_PARQUET))
        if self.store is not None:
            self.store.put_file(self.folder / CAMPAIGN_JSON, Storage.join(self.uri, CAMPAIGN_JSON))
        return doc


class Progress:
    """What a running campaign reports (the runtime tells it; the CLI draws it). Does nothing by itself."""

    def shots(self, total: int) -> None: ...
    def frames(self, added_total: int) -> None: ...
    def frames_done(self, n: int) -> None: ...
    def shot_state(self, position: int, state: str, windows_done: int = 0, windows: int | None = None) -> None: ...
    def shot_done(self, result: ShotResult, position: int | None = None) -> None: ...
    def admission(self, bound: int, peak: int, driver: dict | None = None) -> None: ...
    def node_blocked(self, node: str, entry: dict) -> None: ...


class CancelRequest:
    """Whether `farm cancel` asked the run of the campaign folder `uri` (local or s3://) to stop: the
    marker CANCEL in it, looked for at most every `every` seconds (one stat, or one S3 HEAD).
    Once seen, it stays seen; `clear` removes the marker (at the start and the end of a run)."""

    def __init__(self, store: Storage, uri: str, every: float = 2.0) -> None:
        self.store, self.uri, self.every = store, Storage.join(uri, CANCEL), every
        self.requested = False
        self._looked = 0.0

    def __call__(self) -> bool:
        if not self.requested and time.monotonic() - self._looked >= self.every:
            self._looked = time.monotonic()
            self.requested = self.store.exists(self.uri)
        return self.requested

    def ask(self, by: str) -> None:
        """Ask the run to stop (what `farm cancel` writes: who asked, and when)."""
        self.store.put_bytes(json.dumps({"by": by, "at": _iso(time.time())}).encode(), self.uri)

    def clear(self) -> None:
        self.store.delete(self.uri)


def read_campaign(uri: str, store: Storage) -> dict:
    """campaign.json of the campaign folder `uri` (local or s3://)."""
    target = Storage.join(uri, CAMPAIGN_JSON)
    if not store.exists(target):
        raise FarmError(uri, "no campaign record here", f"give the campaign folder (OUT/<campaign>, holding {CAMPAIGN_JSON})")
    return json.loads(store.get_bytes(target))


def progress_of(doc: dict, now: float) -> dict:
    """How far a campaign record has got, for `farm status --watch`: windows done and in all (the
    windows of shots not planned yet estimated at the planned shots' mean; None while no shot is
    planned), and the seconds left at the pace so far (None until a window is done, or when the
    run is over). now: the reader's clock, in epoch seconds."""
    done_rows = [(r.get("windows_rendered") or 0) + (r.get("windows_reused") or 0) for r in doc.get("shots") or []]
    pending = doc.get("pending") or []
    planned = done_rows + [p["windows"] for p in pending if p.get("windows")]
    done = sum(done_rows) + sum(p.get("windows_done") or 0 for p in pending)
    unplanned = sum(1 for p in pending if not p.get("windows"))
    total = None if not planned and unplanned else round(sum(planned) + unplanned * sum(planned) / max(len(planned), 1))
    eta = None
    if doc.get("status") == "running" and done and total is not None:
        elapsed = max(0.0, now - calendar.timegm(time.strptime(doc["started"], ISO)))
        eta = elapsed * max(0, total - done) / done
    return {"windows_done": done, "windows_total": total, "eta_seconds": eta}


def _iso(t: float) -> str:
    return time.strftime(ISO, time.gmtime(t))
