"""The farm as a Python library: what the `farm` command does, for a studio's own scripts.

    import farm

    shot = farm.render("dance.mp4", "hero.png", out="out", overrides=["match=video", "output.size=720"])
    print(shot.status, shot.video_uri, shot.manifest["metrics"]["pose_pck"])

    campaign = farm.submit("jobs/demo.yaml", out="out")        # every shot on Ray
    print(campaign.counts["shots_failed"], campaign.report)
    doc = farm.status("out/demo")                               # campaign.json, local or s3://

Overrides use the Hydra syntax of the command line. Bad input raises `farm.FarmError` (one line:
what, where, how to fix); a shot that fails while rendering does not raise, its result says
`failed` with the reason, as in a campaign. The command line (`farm.cli`) is a thin layer over
these functions, so the two do the same thing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from farm.campaign import Campaign, CampaignShot, load_campaign
from farm.config import SEED_MAX, FarmConfig, load_config
from farm.errors import FarmError
from farm.library import LIBRARY, Motion, add_motion, library_root, list_motions, resolve_shot
from farm.records import RETAKES, CampaignRecord, CancelRequest, Progress, read_campaign
from farm.shot.outcome import ShotResult
from farm.shot.render import render_shot
from farm.shot.tools import backend_spec, cache_root, stage_root, storage_for
from farm.shot.types import Reporter, Shot
from farm.storage import Storage
from farm.storage.lease import LEASE, Lease
from farm.types import check_shot_id

CAMPAIGN_SUFFIXES = (".yaml", ".yml", ".csv", ".parquet")


@dataclass
class CampaignResult:
    """A finished (or interrupted) campaign run.

    uri: the campaign's folder, OUT/<name> (local or s3://); doc: its campaign.json as written at
    the end (counts and one row per shot); results: every shot's result, in campaign order;
    report: the campaign page's URI, None when it could not be made (the reason is in warnings).
    """

    name: str
    uri: str
    doc: dict
    results: list[ShotResult]
    report: str | None
    warnings: list[str] = field(default_factory=list)
    folder: Path | None = None  # where the campaign's own files were made (a staging folder for s3://)
    cfg: FarmConfig | None = None  # the first shot's config (its storage settings), None when no shot has one

    @property
    def counts(self) -> dict:
        return self.doc["counts"]


@dataclass
class SweepResult(CampaignResult):
    """A sweep: the campaign run of all its variants, and one comparison grid video per shot.

    groups: shot -> [(setting label, variant shot id)]; comparisons: shot -> the grid video's URI,
    or the reason it could not be made."""

    groups: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    comparisons: dict[str, str] = field(default_factory=dict)


def render(
    motion: str | Path,
    character: str | Path,
    *,
    out: str | Path = "out",
    overrides: list[str] | tuple[str, ...] = (),
    skeleton: str | Path | None = None,
    mask: str | Path | None = None,
    prompt: str = "",
    shot_id: str | None = None,
    rights: dict | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> ShotResult:
    """Render one shot in this process into OUT/<shot_id>/ (`farm render`). Inputs are local paths,
    file:// or s3:// URIs; a finished identical shot is reused unless `force`."""
    cfg = load_config(list(overrides))
    check_signing(cfg)
    shot = Shot(motion=motion, character=character, skeleton=skeleton, mask=mask, prompt=prompt, shot_id=shot_id,
                rights=dict(rights or {}))
    shot = resolve_shot(shot, out, storage_for(cfg), {})  # library:NAME: the library's copy, with its rights
    return render_shot(shot, cfg, out, reporter=reporter, force=force)


def submit(
    campaign: str | Path | Campaign,
    out: str | Path = "out",
    *,
    overrides: list[str] | tuple[str, ...] = (),
    force: bool = False,
    progress: Progress | None = None,
) -> CampaignResult:
    """Render every shot of a campaign file (YAML, CSV or Parquet shot list) on Ray into
    OUT/<campaign>/ (`farm submit`): a local cluster, or the one runtime.address / RAY_ADDRESS names."""
    if not isinstance(campaign, Campaign):
        campaign = load_campaign(campaign)
    return render_batch(campaign.name, check(campaign, overrides), str(out), force=force, progress=progress,
                        priorities=campaign.priorities(), source=campaign.path)


def requeue(
    campaign_uri: str | Path,
    *,
    failed: bool = False,
    flagged: bool = False,
    shots: list[str] | tuple[str, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
    progress: Progress | None = None,
) -> CampaignResult | None:
    """Render some shots of a finished (or cancelled, or interrupted) campaign again (`farm requeue
    OUT/<campaign>`): the failed ones, the ones QA flagged for a re-render (with the next seed, which
    later runs of the campaign keep: OUT/<campaign>/retakes.json), and the shots named. It runs the
    campaign file the record names, as `farm submit` would (unchanged since: its sha256 is checked),
    so every other finished shot is reused and the record stays whole. None when no shot is chosen."""
    uri = str(campaign_uri).rstrip("/")
    store = storage_for(load_config(list(overrides)))
    doc = read_campaign(uri, store)
    if doc["status"] == "running":
        raise FarmError(uri, "is running", "wait for it to end, or stop it with `farm cancel` first")
    if not (failed or flagged or shots):
        raise FarmError("farm requeue", "no shots chosen", "give --failed, --flagged and/or --shot ID")
    source = doc.get("source")
    if not source:
        raise FarmError(uri, "its record names no campaign file (a sweep, or a run of an older farm)",
                        "run `farm submit FILE --force` (or `farm sweep`) again")
    path = Path(source["path"])
    if not path.is_file():
        raise FarmError(str(path), f"the campaign file of {uri} is gone", "run `farm submit` of the campaign file where it is now")
    if hashlib.sha256(path.read_bytes()).hexdigest() != source["sha256"]:
        raise FarmError(str(path), f"changed since the run recorded in {uri}",
                        "run `farm submit` of it instead: finished shots that did not change are reused")
    campaign = load_campaign(path, name=doc["name"])
    known = {item.shot.shot_id for item in campaign.shots}
    unknown = [shot for shot in shots if shot not in known]
    if unknown:
        raise FarmError(f"--shot {unknown[0]}", f"is not a shot of campaign {doc['name']}",
                        f"use one of {', '.join(sorted(known)[:20])}{' …' if len(known) > 20 else ''}")
    rows = doc["shots"]
    redo = {r["shot_id"] for r in rows if failed and r["status"] == "failed"} | set(shots)
    retake = {r["shot_id"] for r in rows if flagged and r.get("needs_rerender")}
    if not redo | retake:
        return None
    if retake:  # the next seed of each flagged shot's last take, kept for later runs of the campaign
        seeds = _retakes(store, uri)
        for shot_id in sorted(retake):
            manifest = json.loads(store.get_bytes(Storage.join(uri, "shots", shot_id, "manifest.json")))
            seeds[shot_id] = (int((manifest.get("seeds") or [manifest["config"]["seed"]])[0]) + 1) % (SEED_MAX + 1)
        store.put_bytes(json.dumps(seeds, indent=1).encode(), Storage.join(uri, RETAKES))
    out_root = uri.rsplit("/", 1)[0] if "/" in uri else "."
    return render_batch(campaign.name, check(campaign, overrides), out_root, force=frozenset(redo), progress=progress,
                        priorities=campaign.priorities(), source=campaign.path)


def _retakes(store: Storage, uri: str) -> dict[str, int]:
    """OUT/<campaign>/retakes.json: shot id -> the seed `farm requeue --flagged` gave it ({} when none)."""
    target = Storage.join(uri, RETAKES)
    if not store.exists(target):
        return {}
    seeds = json.loads(store.get_bytes(target))
    if not isinstance(seeds, dict) or not all(isinstance(k, str) and type(v) is int and 0 <= v <= SEED_MAX for k, v in seeds.items()):
        raise FarmError(target, "is not a map of shot ids to seeds", "delete it (the flagged shots go back to their campaign's seeds)")
    return seeds


def check(
    campaign: str | Path | Campaign, overrides: list[str] | tuple[str, ...] = (), *, out: str | Path | None = None
) -> list[tuple[Shot, FarmConfig]]:
    """Every shot of a campaign with its config, before anything runs (`farm submit --check`):
    the first error names the file, the line or row, and the key. out: also resolve the
    `library:NAME` motions against OUT's motion library (a missing name is an error)."""
    if not isinstance(campaign, Campaign):
        campaign = load_campaign(campaign)
    operator = load_config(list(overrides))
    check_signing(operator)  # the operator's own settings first: a typo there is theirs, not a shot's
    configs: dict[tuple, FarmConfig] = {}
    items = [(item.shot, _config_for(item, campaign, list(overrides), configs)) for item in campaign.shots]
    return items if out is None else resolve_motions(items, out, storage_for(operator))[0]


def _config_for(item: CampaignShot, campaign: Campaign, operator: list[str], configs: dict[tuple, FarmConfig]) -> FarmConfig:
    """The config of one campaign shot (its seed offset applied), or a FarmError naming where the
    shot is written. Shots with the same overrides share one composition (thousands of shots)."""
    given = (tuple(operator), tuple(campaign.defaults), tuple(item.overrides))
    if given not in configs:
        try:
            configs[given] = load_config(operator, campaign=[*campaign.defaults, *item.overrides])
        except FarmError as exc:
            raise FarmError(f"{item.where or campaign.path}: {exc.subject}", exc.problem, exc.fix) from None
    cfg = configs[given]
    if campaign.rights_required and not cfg.provenance.rights_required:  # a campaign may ask for more than the operator
        cfg = dataclasses.replace(cfg, provenance=dataclasses.replace(cfg.provenance, rights_required=True))
    if item.variant > 1 and backend_spec(cfg).deterministic:
        raise FarmError(f"{item.where or campaign.path}: variants",
                        f"the {cfg.backend.name} backend is deterministic: every variant would be the same video",
                        "remove `variants`, or render with a backend that samples (e.g. backend=wan_animate)")
    return dataclasses.replace(cfg, seed=cfg.seed + item.seed_offset)


def check_signing(cfg: FarmConfig) -> None:
    """With provenance.sign=true, the certificate and key are read and checked once, here, before
    any shot starts: a wrong path or a key of another certificate is one error, not a failed campaign."""
    if cfg.provenance.sign:
        from farm.provenance.credentials import load_signing

        load_signing(cfg.provenance)


def refused(items: list[tuple[Shot, FarmConfig]]) -> dict[str, str]:
    """The shots the rights gate will refuse (shot id or motion -> the reason), for `submit --check`."""
    from farm.provenance.rights import check_rights

    found = {}
    for shot, cfg in items:
        if cfg.provenance.rights_required:
            try:
                check_rights(shot.rights)
            except FarmError as exc:
                found[shot.shot_id or str(shot.motion)] = exc.problem
    return found


def job(
    campaigns: str | Path,
    out: str,
    address: str,
    *,
    job_id: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    say=print,
    log=print,
    warn=print,
) -> int:
    """Run `farm submit` of a campaign file or folder as a Ray Job on the head at `address` (its
    dashboard URL) and follow it (`farm job`, the nightly CronJob): the submitter may die and the
    campaign goes on; run again, it attaches (see farm.runtime.jobs). The files are checked here
    first: one that cannot be read is reported (warn) and left out, as `farm submit FOLDER` does;
    none readable is an error. Returns the job's exit status (2 when a file was left out)."""
    from farm.runtime.jobs import default_id, run_job

    campaigns = Path(campaigns)
    if not campaigns.exists():
        raise FarmError(str(campaigns), "campaign file or folder not found", "check the path")
    given = campaign_files(campaigns) if campaigns.is_dir() else [campaigns]
    files, names = [], {}
    for path in given:
        try:
            campaign = load_campaign(path)
            if campaign.name in names:
                raise FarmError(str(path), f"names the campaign {campaign.name!r}, as {names[campaign.name]} does",
                                "give every campaign file of the folder its own name")
            check(campaign, overrides)
            names[campaign.name] = path.name
            files.append(path)
        except FarmError as exc:
            warn(str(exc))
    if not files:
        raise FarmError(str(campaigns), "no campaign file could be read (see above)", "fix them; nothing was submitted")
    code = run_job(campaigns, files, out, address, job_id=job_id or default_id(campaigns), overrides=list(overrides),
                   say=say, log=log)
    return 2 if code == 0 and len(files) < len(given) else code


def campaign_files(folder: str | Path) -> list[Path]:
    """The campaign files of a folder in name order (`farm submit FOLDER`, the nightly CronJob)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CAMPAIGN_SUFFIXES)
    if not files:
        raise FarmError(str(folder), "holds no campaign file", f"put campaign files ({', '.join(CAMPAIGN_SUFFIXES)}) in it")
    return files


@dataclass
class SweepPlan:
    """The renders of a sweep. items: (variant shot, its config); extras: the campaign-table columns
    of each variant (sweep_of, settings); groups: shot -> [(setting label, variant shot id)]."""

    name: str
    shots: int
    settings: int
    items: list[tuple[Shot, FarmConfig | FarmError]]
    extras: dict[str, dict]
    groups: dict[str, list[tuple[str, str]]]
    priorities: list[int] = field(default_factory=list)


def plan_sweep(campaign: str | Path | Campaign, overrides: list[str], *, name: str | None = None) -> SweepPlan:
    """Every combination of the swept overrides for every shot of the campaign, as variants."""
    from farm.sweep import expand, slug, variant_ids

    if not isinstance(campaign, Campaign):
        campaign = load_campaign(campaign)
    fixed, settings = expand(list(overrides))
    check_signing(load_config(fixed))  # the operator's own overrides first: a typo there is theirs, not a shot's
    items, extras, groups, configs, priorities = [], {}, {}, {}, []
    taken = {item.shot.shot_id for item in campaign.shots if item.shot.shot_id}
    for n, item in enumerate(campaign.shots):
        base = item.shot.shot_id or _free_id(f"{slug(Path(str(item.shot.motion)).stem)}-{n + 1}", taken)
        taken.add(base)
        for setting, shot_id in zip(settings, variant_ids(base, settings)):
            if shot_id in extras:  # two shots may never share a folder (one would be "reused" as the other)
                raise FarmError(f"sweep {shot_id}", "two variants would have the same id",
                                "give the campaign's shots shorter, distinct ids")
            shot = dataclasses.replace(item.shot, shot_id=shot_id)
            items.append((shot, _config_for(item, campaign, [*fixed, *setting.overrides], configs)))
            priorities.append(item.priority)
            extras[shot.shot_id] = {"sweep_of": base, "settings": " ".join(setting.overrides)}
            groups.setdefault(base, []).append((setting.label, shot.shot_id))
    return SweepPlan(name or f"{campaign.name}-sweep", len(campaign.shots), len(settings), items, extras, groups, priorities)


def _free_id(wanted: str, taken: set[str]) -> str:
    """`wanted`, or `wanted-2`, `wanted-3`, … when a shot of the campaign already has that id."""
    found, n = wanted, 1
    while found in taken:
        n += 1
        found = f"{wanted[: 60]}-{n}"
    return found


def sweep(
    campaign: str | Path | Campaign | SweepPlan,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | Path = "out",
    *,
    name: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> SweepResult:
    """Render every combination of the swept settings (Hydra sweep grammar: `key=a,b`,
    `key=range(…)`) for every shot of the campaign as one batch into OUT/<campaign>-sweep/, with a
    comparison grid video per shot (`farm sweep`). Takes the campaign and the overrides, or what
    `plan_sweep` made of them."""
    plan = campaign if isinstance(campaign, SweepPlan) else plan_sweep(campaign, list(overrides), name=name)
    batch = render_batch(plan.name, plan.items, str(out), force=force, extras=plan.extras, progress=progress,
                         priorities=plan.priorities)
    result = SweepResult(**{f.name: getattr(batch, f.name) for f in dataclasses.fields(CampaignResult)}, groups=plan.groups)
    result.comparisons = {base: _comparison(result, base, variants) for base, variants in plan.groups.items()}
    return result


def verify(video: str | Path, *, records: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """What a video says about where it comes from (`farm verify`): its C2PA credentials, checked
    against the roots of provenance.trust when given, and its watermark, looked up in the records
    under `records` (default: the video's folder). Returns a farm.provenance.verify.Verification."""
    from farm.provenance.verify import verify_video

    return verify_video(video, trust=load_config(list(overrides)).provenance.trust, records=records)


@dataclass
class SkeletonFiles:
    """What `skeleton` wrote: the farm-skeleton/1 YAML, the overlay PNG to check it by eye, and
    where the joints came from ("proposed" from the mask's shape, or "detected" by mediapipe)."""

    yaml: Path
    overlay: Path
    source: str


def skeleton(image: str | Path, *, mask: str | Path | None = None, out: str | Path | None = None) -> SkeletonFiles:
    """Write the skeleton a render of `image` without a skeleton file would use (`farm skeleton`),
    for the user to check on the overlay and edit: out (default ./<image stem>_skeleton.yaml) and
    the overlay next to it (same name, .png). A drawing that is not a standing humanoid raises
    FarmError with the reason."""
    import cv2
    import yaml

    from farm.character import SKELETON_FORMAT, load_character
    from farm.propose import draw_skeleton
    from farm.rig import JOINTS

    # 1. The character as a render would load it.
    character, info = load_character(image, mask_path=mask)
    # 2. The YAML, in whole pixels, with a note on how it was made.
    path = Path(out) if out is not None else Path(f"{Path(image).stem}_skeleton.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    joints = {name: [round(float(x)), round(float(y))] for name, (x, y) in zip(JOINTS, character.joints[:, :2])}
    doc = {"format": SKELETON_FORMAT, "width": info.width, "height": info.height, "joints": joints}
    note = (
        f"# {info.skeleton_source} for {Path(image).name} by `farm skeleton`; check {path.with_suffix('.png').name},\n"
        "# move any joint that is off (image pixels, x right, y down) and pass this file to --character-skeleton.\n"
    )
    path.write_text(note + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
    # 3. The overlay.
    overlay = path.with_suffix(".png")
    drawn = draw_skeleton(character.image, character.mask, character.joints)
    if not cv2.imwrite(str(overlay), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
        raise FarmError(str(overlay), "could not write the overlay image", "check that the folder is writable")
    return SkeletonFiles(path, overlay, info.skeleton_source)


def cancel(campaign_uri: str | Path, *, overrides: list[str] | tuple[str, ...] = (), wait: float = 120.0) -> dict:
    """Ask the running campaign OUT/<campaign> (local or s3://, from any machine) to stop (`farm
    cancel`): no more shots start, windows in flight are dropped (finished windows and shots are
    kept), and its record says `cancelled`. Waits up to `wait` seconds (0: not at all) for the run
    to stop; returns the campaign record as it then is."""
    uri = str(campaign_uri)
    store = storage_for(load_config(list(overrides)))
    doc = read_campaign(uri, store)
    if doc["status"] != "running":
        raise FarmError(uri, f"is not running (campaign.json says {doc['status']})",
                        "nothing to cancel; `farm status` shows how it ended, and `farm submit` runs it again")
    CancelRequest(store, uri).ask(f"{os.environ.get('USER', '?')}@{socket.gethostname()}")
    deadline = time.monotonic() + wait
    while doc["status"] == "running" and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        doc = read_campaign(uri, store)
    if wait and doc["status"] == "running":
        raise FarmError(uri, f"was asked to stop but its record still says running after {wait:g} s",
                        f"its run may have crashed without a record: {LEASE} in the folder names its holder; "
                        "`farm submit` of the campaign resumes it (finished windows are kept)")
    return doc


def status(campaign_uri: str | Path, *, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The campaign record (campaign.json) of OUT/<campaign>, local or s3:// (`farm status`)."""
    return read_campaign(str(campaign_uri), storage_for(load_config(list(overrides))))


def rebuild_reports(campaign_uri: str | Path, *, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, str | None], str]:
    """Rebuild every shot's report and the campaign page from what the store holds (`farm report`).
    Returns (shot id -> its report's URI, None when it has no QA record, or "error: …"), and the
    campaign page's URI."""
    from farm.report import publish_campaign_report, rebuild_shot_report

    uri = str(campaign_uri)
    cfg = load_config(list(overrides))
    store = storage_for(cfg)
    doc = read_campaign(uri, store)
    made: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="farm-report-") as work:
        for row in doc["shots"]:
            try:
                check_shot_id(row.get("shot_id"))  # a record read from the store names no path
                made[row["shot_id"]] = rebuild_shot_report(Storage.join(uri, "shots", row["shot_id"]), store, Path(work))
            except Exception as exc:  # noqa: BLE001 - one shot's report never stops the others
                made[row["shot_id"]] = f"error: {exc}"
        folder = store.local_path(uri) or stage_root(uri, cfg)
        return made, publish_campaign_report(doc, uri, Path(folder), store)


def render_batch(
    name: str,
    items: list[tuple[Shot, FarmConfig | FarmError]],
    out_root: str,
    *,
    force: bool | frozenset[str] = False,
    extras: dict[str, dict] | None = None,
    progress: Progress | None = None,
    priorities: list[int] | None = None,
    source: Path | None = None,
) -> CampaignResult:
    """Render (shot, config) items as one batch on Ray into OUT/<name>/shots/, keeping
    campaign.json up to date, then write campaign.parquet and the campaign report. extras: more
    columns of the campaign table for some shots, by shot id (a sweep's sweep_of and settings).
    priorities: per item, higher starts sooner (farm.runtime.campaign.admission_order).
    force: render finished shots again (all, or those with these ids). source: the campaign file
    (recorded for `farm requeue`). Shots of OUT/<name>/retakes.json render with the seed given there."""
    from farm.runtime.campaign import admission_order, run_campaign
    from farm.runtime.cluster import connect

    if name == LIBRARY:
        raise FarmError(f"campaign name {name!r}", f"is the folder OUT/{LIBRARY}, the motion library the campaigns of OUT share",
                        "give the campaign another name (its `name:` field, or farm submit --name)")
    out = Storage.join(out_root, name)
    first = next((cfg for _, cfg in items if not isinstance(cfg, FarmError)), None)
    runtime = first.runtime if first else None
    store = storage_for(first) if first else Storage()
    items, durations = resolve_motions(items, out_root, store)
    _claim_campaign(store, out)
    with Lease(store, out):  # one run at a time writes a campaign folder
        cancel = CancelRequest(store, out)
        cancel.clear()  # a request left from an earlier run does not stop this one
        connect(runtime.address if runtime else None, runtime.num_cpus if runtime else None,
                runtime.num_gpus if runtime else None)
        seeds = _retakes(store, out)
        if seeds:  # flagged shots that `farm requeue --flagged` gave their next seed keep it
            items = [(shot, dataclasses.replace(cfg, seed=seeds[shot.shot_id]))
                     if shot.shot_id in seeds and not isinstance(cfg, FarmError) else (shot, cfg) for shot, cfg in items]
        record = CampaignRecord(stage_root(out, first), name, len(items), store if Storage.is_remote(out) else None, out)
        record.ray_job = os.environ.get("FARM_RAY_JOB")  # set by `farm job` for the driver it runs on the head
        if source is not None:
            record.source = {"path": str(Path(source).resolve()), "sha256": hashlib.sha256(Path(source).read_bytes()).hexdigest()}
        record.queue([shot.shot_id or Path(str(shot.motion)).name for shot, _ in items])
        record.write()
        finished, results = False, []
        try:
            order = admission_order(items, priorities, durations)
            results = run_campaign(
                items, Storage.join(out, "shots"), force=force, max_retries=runtime.max_retries if runtime else 0,
                max_in_flight=runtime.max_shots_in_flight if runtime else None, library=library_root(out_root), order=order,
                progress=_Recorded(record, extras or {}, progress or Progress()),
                window_timeout=runtime.window_timeout_s if runtime else None,
                bad_node_failures=runtime.bad_node_failures if runtime else 0, cancelled=cancel,
            )
            finished = True
        finally:
            # Also when interrupted: the record says how far the run got, not "running" forever.
            doc = record.write(finished=True, interrupted=not finished and not cancel.requested, cancelled=cancel.requested)
            cancel.clear()
            warnings: list[str] = []
            report = _campaign_report(doc, out, record.folder, store, warnings)
            if first is not None and first.notify.urls:  # last: the message points at the final record and page
                warnings += _notify(first.notify.urls, doc, out, report)
    return CampaignResult(name, out, doc, results, report, warnings, record.folder, first)


def resolve_motions(
    items: list[tuple[Shot, FarmConfig | FarmError]], out_root: str | Path, store: Storage
) -> tuple[list[tuple[Shot, FarmConfig | FarmError]], dict[str, float]]:
    """The items with every `library:NAME` motion resolved (farm.library.resolve_shot), and the
    durations of those motions by their stored copy. A name the library lacks is an error of the
    whole campaign (exit status 2), before anything runs; it names the shot."""
    found: dict[str, Motion] = {}
    resolved = []
    for n, (shot, cfg) in enumerate(items):
        try:
            resolved.append((resolve_shot(shot, out_root, store, found), cfg))
        except FarmError as exc:
            raise FarmError(f"shot {shot.shot_id or n + 1}: {exc.subject}", exc.problem, exc.fix) from None
    return resolved, {motion.video: motion.duration_s for motion in found.values()}


def library_add(
    video: str | Path,
    name: str,
    *,
    out: str | Path = "out",
    tags: tuple[str, ...] = (),
    rights: dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    force: bool = False,
    reporter: Reporter | None = None,
) -> Motion:
    """Add a motion video to OUT's motion library as NAME (`farm library add`): a copy of it, its
    poses (extracted with the operator's pose settings) and its rights; campaigns then name it
    `motion: library:NAME`."""
    cfg = load_config(list(overrides))
    return add_motion(video, name, str(out), cfg, tags=tuple(tags), rights=rights, force=force, reporter=reporter)


def library_list(out: str | Path = "out", *, overrides: list[str] | tuple[str, ...] = ()) -> list[Motion]:
    """The named motions of OUT's motion library (`farm library list`)."""
    return list_motions(str(out), storage_for(load_config(list(overrides))))


def _claim_campaign(store: Storage, out: str) -> None:
    """The campaign folder must be new, empty or the farm's (it holds campaign.json): the farm never
    writes its records and pages over someone else's files."""
    from farm.records import CAMPAIGN_JSON

    found = [f for f in store.list(out) if not f.endswith("/" + LEASE)]  # a lease is the farm's too
    if found and not store.exists(Storage.join(out, CAMPAIGN_JSON)):
        shown = ", ".join(f.removeprefix(out.rstrip("/") + "/") for f in found[:3]) + (", …" if len(found) > 3 else "")
        raise FarmError(f"output {out}", f"is a folder the farm did not make (it holds {shown})",
                        "choose another output folder or campaign name: the farm never writes into folders it did not make")


class _Recorded(Progress):
    """Adds each finished shot to the campaign record, then tells the caller's progress."""

    def __init__(self, record: CampaignRecord, extras: dict[str, dict], inner: Progress) -> None:
        self.record, self.extras, self.inner = record, extras, inner

    def shots(self, total: int) -> None:
        self.inner.shots(total)

    def frames(self, added_total: int) -> None:
        self.inner.frames(added_total)

    def frames_done(self, n: int) -> None:
        self.inner.frames_done(n)

    def shot_state(self, position: int, state: str, windows_done: int = 0, windows: int | None = None) -> None:
        self.record.state(position, state, windows_done, windows)
        self.inner.shot_state(position, state, windows_done, windows)

    def shot_done(self, result: ShotResult, position: int | None = None) -> None:
        self.record.add(result, self.extras.get(result.shot_id), position)
        self.inner.shot_done(result, position)

    def admission(self, bound: int, peak: int, driver: dict | None = None) -> None:
        self.record.admission = {"max_shots_in_flight": bound, "peak_shots_in_flight": peak, "driver": driver}
        self.inner.admission(bound, peak, driver)

    def node_blocked(self, node: str, entry: dict) -> None:
        self.record.bad_nodes.append(entry)
        self.record.write()
        self.inner.node_blocked(node, entry)


def _campaign_report(doc: dict, out: str, folder: Path, store: Storage, warnings: list[str]) -> str | None:
    """The campaign page; a page that cannot be made is a warning, never a failed campaign."""
    from farm.report import publish_campaign_report

    try:
        return publish_campaign_report(doc, out, folder, store)
    except FarmError as exc:
        warnings.append(f"no campaign report: {exc}")
    except Exception as exc:  # noqa: BLE001 - the renders are done and recorded; say why the page is not
        warnings.append(f"no campaign report: {type(exc).__name__}: {exc}")
    return None


def _notify(urls: list[str], doc: dict, out: str, report: str | None) -> list[str]:
    """Tell the operator how the run ended; a message that cannot be sent is a warning, never a failed campaign."""
    from farm.notify import campaign_message, send

    try:
        return send(urls, campaign_message(doc, out, report))
    except Exception as exc:  # noqa: BLE001 - the renders are done and recorded; say why no one was told
        return [f"notification: not sent: {type(exc).__name__}: {exc}"]


def _comparison(batch: SweepResult, base: str, variants: list[tuple[str, str]]) -> str:
    """The grid video of one shot's settings, OUT/<name>/comparisons/<shot>.mp4; its URI, or
    "error: …" (the renders are done and recorded: a grid that cannot be made is a warning)."""
    from farm.sweep import COMPARISONS, write_comparison

    results = {r.shot_id: r for r in batch.results}
    target = batch.folder / COMPARISONS / f"{base}.mp4"
    uri = Storage.join(batch.uri, COMPARISONS, target.name)
    store = storage_for(batch.cfg) if batch.cfg else Storage()
    try:
        cells = []
        for label, shot_id in variants:
            result = results.get(shot_id)
            if result is None or result.status == "failed":
                cells.append((label, None, f"failed: {result.error if result else 'not run'}"))
                continue
            video = result.video or store.fetch(result.video_uri, cache_root(batch.cfg) / "comparisons")
            cells.append((label, video, ""))
        target.parent.mkdir(parents=True, exist_ok=True)
        write_comparison(target, cells)
        if Storage.is_remote(uri):
            store.put_file(target, uri)
        return uri
    except Exception as exc:  # noqa: BLE001
        return f"error: {exc}"
