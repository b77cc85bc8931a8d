"""What a video says about where it comes from (`farm verify VIDEO`): its C2PA content credentials
(signer, validity, how it was made, ingredients, the farm record they name) and the watermark in
its frames (the shot's code), looked up in the farm's records when the credentials are gone."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from farm.errors import FarmError
from farm.media.decode import iter_luma
from farm.provenance.credentials import ASSERTION, IPTC, record_digest
from farm.provenance.watermark import Reading, code_hex, read_video

# Frames read for the watermark: a mark is in every frame, so the first 10 s or so tell.
MAX_FRAMES = 300
# Validation codes about whom the signer is, not about whether the file is intact.
_TRUST_CODES = ("signingCredential.untrusted",)


@dataclass
class Credentials:
    """The active C2PA manifest of a video, as c2pa's Reader validated it. state: "Valid",
    "Trusted" or "Invalid"; failures: the codes of what did not validate, trust codes included."""

    state: str
    failures: list[str]
    signer: str
    issuer: str
    alg: str
    time: str | None
    generator: str
    source_type: str | None
    ingredients: list[dict]
    shot: dict

    @property
    def intact(self) -> bool:
        """Signature valid and every hash matches (whoever signed)."""
        return not [code for code in self.failures if code not in _TRUST_CODES]

    @property
    def trusted(self) -> bool:
        return self.state == "Trusted"


@dataclass
class Verification:
    video: str
    credentials: Credentials | None
    missing: str  # why there are no credentials, when there are none
    watermark: Reading
    trust: str | None  # the roots checked against, None: no trust list given
    shot_id: str | None = None  # from the credentials, else from the records the watermark's code leads to
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Something says where the video comes from and nothing contradicts it: credentials intact
        (and trusted, when a trust list is given) or, without credentials, a watermark."""
        if self.credentials is not None:
            return self.credentials.intact and (self.trust is None or self.credentials.trusted)
        return self.watermark.found

    @property
    def problem(self) -> str | None:
        c = self.credentials
        if c is not None and not c.intact:
            broken = ", ".join(f for f in c.failures if f not in _TRUST_CODES)
            return f"the content credentials do not validate ({broken}): the video was changed after it was signed"
        if c is not None and self.trust is not None and not c.trusted:
            return f"the signer {c.signer} is not trusted by the roots in {self.trust}"
        if c is None and not self.watermark.found:
            return "no content credentials and no watermark: nothing says where this video comes from"
        return None

    def lines(self) -> list[str]:
        out = [f"video: {self.video}"]
        c = self.credentials
        if c is None:
            out.append(f"content credentials: none ({self.missing})")
        else:
            out.append(f"content credentials: signed by {c.signer} (issuer {c.issuer}, {c.alg}"
                       f"{', at ' + c.time if c.time else ''})")
            if not c.intact:
                validity = "INVALID: " + ", ".join(f for f in c.failures if f not in _TRUST_CODES)
            elif self.trust is None:
                validity = "valid: signature and hashes match; signer not checked against a trust list (provenance.trust=ROOTS.pem)"
            elif c.trusted:
                validity = f"valid and trusted: signature and hashes match; the signer chains to a root in {self.trust}"
            else:
                validity = f"signature and hashes match, but the signer is NOT trusted by {self.trust}"
            out.append(f"  validity: {validity}")
            out.append(f"  made by: {c.generator}; digital source type: {c.source_type}")
            for item in c.ingredients:
                out.append(f"  ingredient: {item.get('title')} ({item.get('relationship')}): {item.get('description', '')}")
            if c.shot:
                out.append(f"  shot: {c.shot.get('shot_id')}, content key {c.shot.get('content_key')}, "
                           f"record sha256 {c.shot.get('record_sha256')}")
                usage = (c.shot.get("rights") or {}).get("usage")
                if usage:
                    out.append(f"  usage: {usage}")
        w = self.watermark
        if w.found:
            named = f" -> shot {self.shot_id}" if self.shot_id else " (no record names it: give --records OUT)"
            out.append(f"watermark: code {code_hex(w.code)}, carried by {w.agreeing} of {w.frames} frames on their own{named}")
        else:
            out.append(f"watermark: none found in {w.frames} frames")
        out.extend(f"note: {note}" for note in self.notes)
        return out


def verify_video(video: str | Path, *, trust: str | None = None, records: str | Path | None = None) -> Verification:
    """Read a video's credentials and watermark. trust: a PEM file of trusted roots; records: a
    folder of farm output searched for the manifest that names the watermark's code (by default
    the video's own folder)."""
    video = Path(video)
    if not video.is_file():
        raise FarmError(str(video), "file not found", "check the path of the video")
    credentials, missing = _credentials(video, trust)
    reading = read_video(islice(iter_luma(video), MAX_FRAMES))
    result = Verification(str(video), credentials, missing, reading, trust)
    if credentials is not None and credentials.shot:
        result.shot_id = credentials.shot.get("shot_id")
    manifest = _record_for(video, reading, Path(records) if records else video.parent)
    if manifest is not None:
        _compare(result, manifest)
    return result


def _credentials(video: Path, trust: str | None) -> tuple[Credentials | None, str]:
    import c2pa

    settings = {}
    if trust:
        try:
            settings = {"trust": {"user_anchors": Path(trust).read_text()}}
        except OSError as exc:
            raise FarmError(f"config provenance.trust {trust}", f"cannot be read ({exc.strerror})",
                            "give a PEM file of root certificates") from None
    try:
        with c2pa.Context.from_dict(settings) as context, c2pa.Reader(str(video), context=context) as reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state() or "Invalid"
            results = reader.get_validation_results() or {}
    except c2pa.C2paError as exc:
        text = str(exc)
        return None, "the file holds no C2PA manifest" if "ManifestNotFound" in text else f"unreadable: {text}"
    active = store["manifests"][store["active_manifest"]]
    signature = active.get("signature_info") or {}
    failures = [item["code"] for item in (results.get("activeManifest") or {}).get("failure", [])]
    actions = [a for assertion in active.get("assertions", []) if assertion["label"].startswith("c2pa.actions")
               for a in assertion["data"].get("actions", [])]
    created = next((a for a in actions if a.get("action") == "c2pa.created"), {})
    agent = created.get("softwareAgent") or {}
    shot = next((a["data"] for a in active.get("assertions", []) if a["label"] == ASSERTION), {})
    return Credentials(
        state=state, failures=failures, signer=str(signature.get("common_name")), issuer=str(signature.get("issuer")),
        alg=str(signature.get("alg")), time=signature.get("time"),
        generator=f"{agent.get('name', '?')} {agent.get('version', '')} ({created.get('action', 'no c2pa.created action')})".strip(),
        source_type=str(created.get("digitalSourceType", "")).removeprefix(IPTC) or None,
        ingredients=active.get("ingredients", []), shot=shot,
    ), ""


def _record_for(video: Path, reading: Reading, folder: Path) -> dict | None:
    """The farm manifest beside the video, or the one under `folder` whose watermark code the frames
    carry."""
    beside = video.parent / "manifest.json"
    candidates = [beside] if beside.is_file() else []
    if reading.found and folder.is_dir():
        candidates += sorted(folder.rglob("manifest.json"))
    for path in candidates:
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        mark = ((manifest.get("provenance") or {}).get("watermark") or {}).get("code")
        if path == beside or (reading.found and mark == code_hex(reading.code)):
            return manifest | {"_path": str(path)}
    return None


def _compare(result: Verification, manifest: dict) -> None:
    """What the farm record says against what the video says."""
    where = manifest.pop("_path")
    mark = ((manifest.get("provenance") or {}).get("watermark") or {}).get("code")
    if result.watermark.found and mark == code_hex(result.watermark.code):
        result.shot_id = result.shot_id or manifest.get("shot_id")
        result.notes.append(f"the watermark's code is the one {where} records for shot {manifest.get('shot_id')}")
    elif result.watermark.found:
        result.notes.append(f"{where} records another watermark code ({mark}) than the frames carry")
    shot = result.credentials.shot if result.credentials else {}
    if shot.get("record_sha256"):
        same = shot["record_sha256"] == record_digest(manifest)
        result.notes.append(f"the credentials' record sha256 {'matches' if same else 'does NOT match'} {where}")
