"""HTML reports (DESIGN §7): one per shot (`shots/<id>/report.html`) and one per campaign
(`<campaign>/report.html`).

A shot report is self-contained: every image inline (JPEG data URIs; plots are inline SVG
drawn here). The campaign page must stay small at 10,000 shots, so it embeds no image: it is a
summary (counts, a hand-drawn SVG histogram per metric, the worst shots) and a table whose rows
are JSON in the page, filtered and paged by an inline script, with each shot's thumb.jpg from its
folder by relative URL. Neither page has a script or style from elsewhere or any external URL: a
shot report opens the same from a disk, an S3 console download or a mail attachment, the campaign
page from a disk or a download of the campaign folder. The pages are made with Jinja2 templates
(farm/templates/) with autoescaping on: prompts, shot ids and rights text are user strings.

`write_shot_report` needs the shot folder as the render leaves it (manifest record, qa.parquet,
video.mp4) and, when available, the motion video and the character image; `write_campaign_report`
needs the campaign record (campaign.json). `farm report` rebuilds both from the output store.
"""
from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from farm.qa.measure import read_quality_table
from farm.storage.local import write_bytes
from farm.types import SHOT_ID

THUMB = "thumb.jpg"
CAMPAIGN_REPORT = "report.html"  # the campaign page, beside campaign.json
SHEET_FRAMES = 6  # moments in the contact sheet
SHEET_HEIGHT = 200  # pixels of each contact-sheet image
# The campaign page: rows a page of its table shows, shots in each list of the worst, bars of each
# metric's histogram and that histogram's size in pixels.
PAGE_ROWS = 100
WORST = 10
HISTOGRAM_BINS = 20
HISTOGRAM_SIZE = (200, 48)
# A shot's verdict on the campaign page: key, label, badge style; in the order the table lists them.
VERDICTS = (("flagged", "needs a re-render", "flag"), ("failed", "failed", "failed"), ("passed", "passed", "ok"))
# COCO-17 limbs drawn on the pose overlays.
_LIMBS = ((5, 7), (7, 9), (6, 8), (8, 10), (5, 6), (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
          (0, 1), (0, 2), (1, 3), (2, 4))
# Shot metrics in the tables: key, label, digits.
METRICS = (
    ("pose_pck", "PCK@0.1", 3), ("pose_oks", "OKS", 3), ("joint_pck", "worst point", 3), ("pose_detected", "pose found", 2),
    ("jitter", "jitter", 4),
    ("appearance_drift", "drift", 3), ("appearance_ssim", "SSIM", 3), ("seam_score", "seam", 2),
    ("overlap_overhead", "overlap", 2),
)


def _env() -> Environment:
    env = Environment(loader=PackageLoader("farm", "templates"), autoescape=select_autoescape(["html", "j2"]))
    # Numbers only: a record from an older farm lacks metrics (None, or undefined in Jinja).
    env.filters["num"] = lambda v, digits=3: f"{v:.{digits}f}" if isinstance(v, int | float) else ""
    return env


@dataclass
class ShotSources:
    """What a shot report is made from, as local files; the report and thumbnail are written into
    `folder`. video and table default to the folder's video.mp4 and qa.parquet. motion and
    character may be None (an input that can no longer be read): the report then says so."""

    folder: Path
    record: dict
    motion: Path | None = None
    character: np.ndarray | None = None
    video: Path | None = None
    table: Path | None = None


def write_shot_report(sources: ShotSources) -> Path:
    """Write report.html and thumb.jpg into the shot folder; returns the report's path."""
    from farm.media.decode import read_frames

    folder, record = sources.folder, sources.record
    table = read_quality_table(sources.table or folder / "qa.parquet")
    total = len(table["frame"])
    picks = np.unique(np.linspace(0, total - 1, min(SHEET_FRAMES, total)).round().astype(int))
    output = [read_frames(sources.video or folder / "video.mp4", int(t), int(t) + 1)[0] for t in picks]
    write_bytes(folder / THUMB, _jpeg(output[len(output) // 2], 160), str(folder / THUMB))
    sheet = []
    for t, frame in zip(picks, output):
        reference = None
        if sources.motion is not None:
            source = int(table["source_frame"][t])
            reference = _data_uri(_jpeg(read_frames(sources.motion, source, source + 1)[0], SHEET_HEIGHT, by="height"))
        overlay = _draw_pose(frame, table["target"][t], table["measured"][t])
        sheet.append({
            "frame": int(t), "reference": reference, "output": _data_uri(_jpeg(frame, SHEET_HEIGHT, by="height")),
            "overlay": _data_uri(_jpeg(overlay, SHEET_HEIGHT, by="height")),
            "pck": _finite(table["pose_pck"][t]), "drift": _finite(table["appearance_drift"][t]),
        })
    character = None if sources.character is None else _data_uri(_jpeg(sources.character, SHEET_HEIGHT, by="height"))
    metrics = record.get("metrics") or {}
    page = _env().get_template("shot.html.j2").render(
        r=record, m=metrics, qa=record.get("qa") or {}, metrics=METRICS, sheet=sheet, character=character,
        motion_missing=sources.motion is None, windows=metrics.get("windows") or [],
        takes=[(w["index"], t) for w in record.get("windows") or [] for t in w.get("takes") or [] if len(w["takes"]) > 1],
        plots=_plots(table),
        settings=yaml.safe_dump(record.get("config") or {}, sort_keys=False),
        thresholds=_thresholds(record),
    )
    path = folder / "report.html"
    write_bytes(path, page.encode(), str(path))
    return path


def write_campaign_report(path: Path, doc: dict) -> Path:
    """Write the campaign page from campaign.json's content `doc`: a summary (shots by verdict and
    by re-render reason, a histogram per metric, the worst shots), then every shot in a table that
    the page's own script filters, sorts and shows a page at a time. The rows are JSON inside the
    page (a few hundred bytes a shot); the thumbnails are the shots' own `shots/<id>/thumb.jpg`,
    by relative URL, loaded as their rows come into view."""
    rows = [{**row, "verdict": _verdict(row), "files": bool(SHOT_ID.match(str(row.get("shot_id"))))} for row in doc["shots"]]
    order = [key for key, _, _ in VERDICTS]
    rows.sort(key=lambda r: (order.index(r["verdict"]), r.get("sweep_of") or "", str(r.get("shot_id"))))
    sweep, money = any(r.get("settings") for r in rows), any(r.get("money") is not None for r in rows)
    columns = _columns(sweep, money)
    verdicts = Counter(r["verdict"] for r in rows)
    reasons = Counter(_reason_metric(reason) for r in rows if r["verdict"] == "flagged" for reason in r.get("qa_reasons") or [])
    scored = [r for r in rows if r["verdict"] != "failed" and _finite(r.get("pose_pck")) is not None]
    failed = [r for r in rows if r["verdict"] == "failed"]
    page = _env().get_template("campaign.html.j2").render(
        doc=doc, total=len(rows), verdicts=[{"key": key, "label": label, "badge": badge, "shots": verdicts[key]}
                                           for key, label, badge in VERDICTS], reasons=reasons.most_common(),
        histograms=_histograms(rows), lowest=sorted(scored, key=lambda r: r["pose_pck"])[:WORST], failed=failed[:WORST],
        failed_total=len(failed), worst=WORST, columns=columns, page_rows=PAGE_ROWS, table=_table_json(rows, columns),
    )
    write_bytes(path, page.encode(), str(path))
    return path


def _verdict(row: dict) -> str:
    if row.get("status") == "failed":
        return "failed"
    return "flagged" if row.get("needs_rerender") else "passed"


def _reason_metric(reason: str) -> str:
    """The metric a re-render reason is about: its first word (farm.qa.measure.verdict writes them so)."""
    return reason.split(" ", 1)[0]


def _columns(sweep: bool, money: bool) -> list[dict]:
    """The campaign table's columns: the row field each shows, its heading, how it sorts
    (text or num) and, for numbers, the digits shown (None: as recorded)."""
    column = lambda field, label, kind="text", digits=None: {"field": field, "label": label, "type": kind, "digits": digits}
    return [
        column("shot_id", "shot"), *([column("settings", "setting")] if sweep else []), column("status", "state"),
        column("verdict", "re-render"), column("pose_source", "pose by"),
        *(column(key, label, "num", digits) for key, label, digits in METRICS),
        column("frames", "frames", "num"), column("seconds", "seconds", "num"), column("gpu_seconds", "GPU-s", "num", 2),
        column("cpu_seconds", "CPU-s", "num", 2), *([column("money", "money", "num", 4)] if money else []),
    ]


def _table_json(rows: list[dict], columns: list[dict]) -> Markup:
    """The table's rows as compact JSON for a <script type="application/json"> block: a list of
    field names and one list of values per row (numbers rounded a digit past what is shown), with
    no '<', '>' or '&' that could end the block (shot ids, settings, reasons and errors are user
    text; the page's script puts them in the page as text, never as markup)."""
    fields = [c["field"] for c in columns] + ["qa_reasons", "error", "thumb", "report"]
    digits = {c["field"]: c["digits"] for c in columns if c["type"] == "num"}

    def value(row: dict, field: str):
        v = row.get(field)
        if field in digits:
            if _finite(v) is None:  # none recorded (a failed shot), or not a number JSON can hold
                return None
            return v if digits[field] is None else round(v, digits[field] + 1)
        if field == "thumb":  # the shot's render made one (a failed shot has no video)
            return int(row["files"] and row["verdict"] != "failed")
        if field == "report":
            return int(row["files"] and bool(v))
        return v

    text = json.dumps({"fields": fields, "rows": [[value(row, f) for f in fields] for row in rows]},
                      separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _histograms(rows: list[dict]) -> list[dict]:
    """A small bar chart per metric over the shots that have it: HISTOGRAM_BINS bars scaled to the
    tallest, in an svg HISTOGRAM_SIZE pixels wide and high, with the range each bar covers."""
    width, height = HISTOGRAM_SIZE
    step = width / HISTOGRAM_BINS
    out = []
    for key, label, digits in METRICS:
        values = np.array([v for r in rows if (v := _finite(r.get(key))) is not None], float)
        if not len(values):
            continue
        counts, edges = np.histogram(values, bins=HISTOGRAM_BINS)
        bars = [{"x": round(i * step, 1), "width": round(step - 1, 1), "height": max(1.0, round(height * int(n) / counts.max(), 1)),
                 "count": int(n), "low": f"{edges[i]:.{digits}f}", "high": f"{edges[i + 1]:.{digits}f}"}
                for i, n in enumerate(counts) if n]
        out.append({"key": key, "label": label, "shots": len(values), "bars": bars, "width": width, "height": height,
                    **{name: f"{stat:.{digits}f}" for name, stat in
                       (("min", values.min()), ("median", np.median(values)), ("max", values.max()))}})
    return out


def _thresholds(record: dict) -> dict[str, str]:
    """The limit on each metric, as text ('>= 0.5'), from the shot's resolved qa config."""
    from farm.qa.measure import THRESHOLDS

    qa = (record.get("config") or {}).get("qa") or {}
    out = {}
    for key, metric, at_least in THRESHOLDS:
        if qa.get(key) is not None:
            out[metric] = f"{'≥' if at_least else '≤'} {qa[key]:g}"
    if qa.get("min_pose_detected") is not None:
        out["pose_detected"] = f"≥ {qa['min_pose_detected']:g}"
    return out


PLOT_SIZE = (576, 158)  # pixels of each per-frame plot
PLOT_MARGIN = (44, 10, 10, 30)  # left, right, top, bottom: room for the axes' numbers
PLOT_COLOURS = ("#1f77b4", "#ff7f0e")


def _plots(table: dict[str, np.ndarray]) -> list[dict]:
    """Per-frame plots as inline SVG drawn here (a few ms a shot, where a plotting library took
    ~0.5 s of a worker's CPU): pose, appearance, frame differences (joins shaded), jitter."""
    frames = np.asarray(table["frame"], float)
    # The joins as QA marked them: runs of frames in qa.parquet's at_join column.
    edges = np.diff(np.r_[0, np.asarray(table["at_join"], np.int8), 0])
    joins = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))
    panels = (
        ("Pose fidelity per frame", (("pose_pck", "PCK@0.1"), ("pose_oks", "OKS")), (0, 1.02)),
        ("Appearance vs the character image", (("appearance_drift", "histogram distance"), ("appearance_ssim", "torso SSIM")), (0, 1.02)),
        ("Frame difference (window joins shaded)", (("frame_diff", "mean |Δ| grey levels"),), None),
        ("Keypoint acceleration (jitter)", (("jitter", "torso sizes / frame²"),), None),
    )
    return [{"title": title, "svg": _line_plot(title, frames, [(label, np.asarray(table[key], float)) for key, label in series],
                                               limits, joins)}
            for title, series, limits in panels]


def _line_plot(title: str, x: np.ndarray, series: list[tuple[str, np.ndarray]], limits: tuple | None,
               joins: list[tuple[int, int]]) -> Markup:
    """One plot: a line per series (broken where a value is missing), y from `limits` or the data,
    x over the output frames, shaded spans for the joins, a legend and a few labelled ticks."""
    width, height = PLOT_SIZE
    left, right, top, bottom = PLOT_MARGIN
    inner_w, inner_h = width - left - right, height - top - bottom
    finite = np.concatenate([v[np.isfinite(v)] for _, v in series]) if series else np.array([])
    low, high = limits or ((min(0.0, finite.min()), finite.max()) if len(finite) else (0.0, 1.0))
    if high <= low:
        high = low + 1.0
    x_max = max(1.0, float(x.max()) if len(x) else 1.0)

    def px(value) -> np.ndarray:
        return left + np.asarray(value, float) / x_max * inner_w

    def py(value) -> np.ndarray:
        return top + (1 - (np.asarray(value, float) - low) / (high - low)) * inner_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="10">']
    for first, end in joins:
        x0, x1 = px(max(0.0, first - 0.5)), px(min(x_max, end + 0.5))
        parts.append(f'<rect x="{x0:.1f}" y="{top}" width="{max(1.0, x1 - x0):.1f}" height="{inner_h}" fill="#f4c542" fill-opacity="0.3"/>')
    for tick in _ticks(low, high):
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{left + inner_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{_tick(tick, high - low)}</text>')
    for tick in _ticks(0.0, x_max, whole=True):
        x_ = px(tick)
        parts.append(f'<text x="{x_:.1f}" y="{top + inner_h + 13}" text-anchor="middle">{int(tick)}</text>')
    parts.append(f'<text x="{left + inner_w / 2:.1f}" y="{height - 3}" text-anchor="middle">output frame</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{inner_w}" height="{inner_h}" fill="none" stroke="#888"/>')
    for (_, values), colour in zip(series, PLOT_COLOURS):
        xs, ys = px(x), py(np.clip(values, low, high))
        ok = np.isfinite(values)
        for run in np.split(np.arange(len(values)), np.flatnonzero(np.diff(ok.astype(np.int8))) + 1):
            if len(run) and ok[run[0]]:
                points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs[run], ys[run]))
                parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.2"/>')
    for n, ((label, _), colour) in enumerate(zip(series, PLOT_COLOURS)):
        x_, y = left + 8 + n * 150, top + inner_h - 8
        parts.append(f'<line x1="{x_}" x2="{x_ + 16}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
                     f'<text x="{x_ + 20}" y="{y + 3}">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _ticks(low: float, high: float, *, whole: bool = False) -> np.ndarray:
    """Round tick values from low to high, about five: steps of 1, 2, 2.5 or 5 times a power of ten."""
    rough = (high - low) / 5
    power = 10.0 ** np.floor(np.log10(rough))
    step = next(power * m for m in (1, 2, 2.5, 5, 10) if power * m >= rough)
    if whole:
        step = max(1.0, np.ceil(step))
    return np.arange(np.ceil(low / step) * step, high + step * 1e-6, step)


def _tick(value: float, span: float) -> str:
    digits = 0 if span >= 20 else 1 if span >= 2 else 2 if span >= 0.2 else 3
    return f"{value:.{digits}f}"


def _draw_pose(frame: np.ndarray, target: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """The output frame with the target pose (green) and the measured one (red) drawn on it."""
    canvas = frame.copy()
    width = max(1, round(min(frame.shape[:2]) / 160))
    for points, colour in ((target, (40, 220, 60)), (measured, (240, 40, 40))):
        seen = points[:, 2] >= 0.5
        for a, b in _LIMBS:
            if seen[a] and seen[b]:
                cv2.line(canvas, tuple(int(v) for v in points[a, :2]), tuple(int(v) for v in points[b, :2]), colour, width,
                         cv2.LINE_AA)
        for k in np.flatnonzero(seen):
            cv2.circle(canvas, tuple(int(v) for v in points[k, :2]), width + 1, colour, -1, cv2.LINE_AA)
    return canvas


def _jpeg(rgb: np.ndarray, size: int, *, by: str = "width") -> bytes:
    h, w = rgb.shape[:2]
    scale = size / (w if by == "width" else h)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def _finite(value) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def publish_campaign_report(doc: dict, uri: str, folder: Path, store) -> str:
    """Write `<campaign>/report.html` from the campaign record `doc` into `folder`, upload it when
    `uri` is s3://; returns its URI. The page reads no shot file: its thumbnails are the shots'
    thumb.jpg, already beside it in the store (shots/<id>/), so a page for 10,000 shots costs no
    more requests than a page for one."""
    from farm.storage import Storage

    path = write_campaign_report(Path(folder) / CAMPAIGN_REPORT, doc)
    target = Storage.join(uri, CAMPAIGN_REPORT)
    if Storage.is_remote(uri):
        store.put_file(path, target)
    return target


def rebuild_shot_report(shot_uri: str, store, work: Path) -> str | None:
    """`farm report` for one shot: fetch what the report is made from (into `work` for s3://),
    write report.html and thumb.jpg, upload them for s3://. Returns the report's URI, or None when
    the shot has no QA record (failed, or rendered before QA existed)."""
    import json

    from farm.errors import FarmError
    from farm.media.probe import load_image, sha256_file
    from farm.storage import Storage
    from farm.types import check_shot_id

    record = json.loads(store.get_bytes(Storage.join(shot_uri, "manifest.json")))
    if record.get("status") != "succeeded" or "qa" not in record:
        return None
    check_shot_id(record.get("shot_id"))  # it names the folder the report is made in
    folder = store.local_path(shot_uri)
    video = table = None
    if folder is None:  # s3://: fetched into the cache, the report is made in `work`
        folder = Path(work) / record["shot_id"]
        folder.mkdir(parents=True, exist_ok=True)
        video, table = (store.fetch(Storage.join(shot_uri, name), Path(work) / "fetched") for name in ("video.mp4", "qa.parquet"))
    inputs = record.get("inputs") or {}

    def fetched(name: str) -> Path | None:
        """The input the shot was made from, through the store (so within storage.roots), and only
        when its bytes are the ones the manifest recorded: a manifest that names another file
        (file:///…/secret.png) gets nothing of it into a report."""
        try:
            path = store.fetch(str(inputs[name]["uri"]), Path(work) / "inputs")
            return path if sha256_file(path) == inputs[name]["sha256"] else None
        except (FarmError, KeyError, TypeError, OSError):
            return None

    character = fetched("character")
    if character is not None:
        try:
            character = load_image(character)[0]
        except FarmError:  # no longer an image we can read: the report goes without it
            character = None
    path = write_shot_report(ShotSources(folder, record, motion=fetched("motion"), video=video, table=table,
                                         character=character))
    if Storage.is_remote(shot_uri):
        store.put_file(path, Storage.join(shot_uri, path.name))
        store.put_file(folder / THUMB, Storage.join(shot_uri, THUMB))
    return Storage.join(shot_uri, path.name)
