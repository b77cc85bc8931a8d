"""Campaign files: many shots rendered as one batch (`jobs/*.yaml`, or a CSV / Parquet shot list).

    name: demo
    defaults: [output.size=512]          # Hydra overrides for every shot
    shots_file: shots.csv                # optional: more shots, one per row (see below)
    shots:                               # optional when shots_file is given
      - id: please-crown                 # optional; derived from the content when absent
        motion: media/gesture_asl_please.mkv     # relative paths are relative to this file;
                                                 # library:NAME: a motion of OUT's motion library
        character: media/childdrawing_char1.png  # s3://bucket/key URIs are kept as written
        skeleton: media/childdrawing_char1_skeleton.yaml   # optional
        mask: media/childdrawing_char1_mask.png             # optional
        prompt: ""                                           # optional
        overrides: [match=video]                             # optional, per shot
        variants: 2                                          # optional: renders with seeds seed+0..N-1
        priority: 10                                         # optional: higher starts sooner (default 0)
        rights: {motion_source: ..., character_source: ..., license: ..., consent: ...}
    rights: {required: true}             # optional: refuse shots whose rights lack a source or consent
    priority: 0                          # optional: in `farm submit FOLDER`, higher campaigns run first

A shot's rights take motion_source, character_source, license, license_file (a licence document:
a path relative to this file, file:// or s3:// — copied into the shot folder and hashed — or an
http(s) URL, recorded), consent (or motion_consent and character_consent) and usage (the final
usage notes). With `rights: {required: true}` (or the operator's provenance.rights_required=true)
a shot whose rights lack a source or a consent for either input is refused before any work and
recorded as failed with the reason; the other shots render.

A shot list (`shots_file`, or a .csv / .parquet file given as the campaign itself, which then takes
its name from the file name and has no defaults) has one shot per row and the columns motion and
character (required), id, skeleton, mask, prompt, overrides (space-separated, e.g.
`match=video output.size=256`), variants, priority, rights.motion_source, rights.character_source,
rights.license, rights.license_file, rights.consent, rights.motion_consent, rights.character_consent
and rights.usage. Empty cells are absent values; relative paths are relative to
the list file.

A shot with `variants: N` becomes N campaign shots (Kling's generation count), variant 1..N with
seed offsets 0..N-1; when the shot has an id, variants after the first get `-v2`, `-v3`, ...
Shots start in order of priority (higher first), then longest motion first, then as written;
the campaign's record and report keep the order as written.
Every error names the file and the line (YAML) or the data row, counted from 1 after the header,
and the column (shot lists).
"""
from __future__ import annotations

import csv
import datetime
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from farm.config import check_override
from farm.errors import FarmError
from farm.provenance.rights import RIGHTS_KEYS, is_url
from farm.shot.types import Shot
from farm.types import SHOT_ID, check_motion_name, library_name

_CAMPAIGN_KEYS = ("name", "defaults", "shots", "shots_file", "rights", "priority")
_SHOT_KEYS = ("id", "motion", "character", "skeleton", "mask", "prompt", "overrides", "variants", "priority", "rights")
_RIGHTS_KEYS = RIGHTS_KEYS
_LIST_COLUMNS = tuple(k for k in _SHOT_KEYS if k != "rights") + tuple(f"rights.{k}" for k in _RIGHTS_KEYS)
_LIST_SUFFIXES = (".csv", ".parquet")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URI_SCHEMES = ("s3", "file")
_INPUT_NOUNS = {"motion": "motion video", "character": "character image", "skeleton": "skeleton file", "mask": "mask image",
                "license_file": "licence file"}
_ID_RULE = "use letters, digits, '-', '_' or '.' (at most 64, starting with a letter or digit)"


@dataclass
class CampaignShot:
    """One render of a campaign. variant: 1..N of the shot's `variants`; the render's seed is the
    resolved config's seed + seed_offset (= variant - 1)."""

    shot: Shot
    overrides: list[str] = field(default_factory=list)
    variant: int = 1
    seed_offset: int = 0
    where: str = ""  # where the shot is written ("jobs/x.yaml line 12: shots[3]"), for errors
    priority: int = 0  # higher starts sooner


@dataclass
class Campaign:
    """rights_required: the campaign asks that every shot's rights name a source and a consent for
    both inputs (it can only ask for more than the operator's provenance.rights_required, never less)."""

    name: str
    path: Path
    defaults: list[str]
    shots: list[CampaignShot]
    rights_required: bool = False
    priority: int = 0  # in `farm submit FOLDER`: higher campaigns run first

    def priorities(self) -> list[int]:
        return [item.priority for item in self.shots]


@dataclass(frozen=True)
class _Entry:
    """One shot as written, not yet checked.

    fields: the raw values in the YAML shape (overrides a list, rights a mapping).
    base: the folder that relative paths are relative to.
    where: names the place of a field for an error ("" names the shot itself), e.g.
    "jobs/x.yaml line 12: shots[3].character" or "list.csv row 4, column character".
    """

    fields: object
    base: Path
    where: Callable[[str], str]


def load_campaign(path: str | Path, *, name: str | None = None) -> Campaign:
    """name: the campaign's name as the operator gives it (`farm submit --name`), instead of the
    YAML's `name` or a shot list's file name (a `shots.csv` would otherwise write OUT/shots/shots/)."""
    path = Path(path)
    if not path.is_file():
        raise FarmError(str(path), "campaign file not found", "check the path")
    if name is not None and not SHOT_ID.match(name):
        raise FarmError(f"--name {name!r}", "not a valid campaign name", _ID_RULE)
    if path.suffix.lower() in _LIST_SUFFIXES:
        if name is None and not SHOT_ID.match(path.stem):
            raise FarmError(str(path), f"file name {path.stem!r} is not a valid campaign name",
                            f"rename the file or give the campaign a name with --name: {_ID_RULE}")
        own, defaults, entries, required, priority = path.stem, [], _list_entries(path), False, 0
    else:
        own, defaults, entries, required, priority = _yaml_campaign(path)
    return Campaign(name=name or own, path=path, defaults=defaults, shots=_expand(entries), rights_required=required,
                    priority=priority)


# YAML campaigns ------------------------------------------------------------------------------------


def _yaml_campaign(path: Path) -> tuple[str, list[str], list[_Entry], bool, int]:
    doc, root = _read_yaml(path)

    def where(*keys: str | int) -> str:
        return f"{path} line {_line(root, keys)}: {_dotted(keys)}"

    if not isinstance(doc, dict):
        raise FarmError(str(path), "a campaign must be a mapping with `name` and `shots`", "see jobs/demo.yaml")
    unknown = [key for key in doc if key not in _CAMPAIGN_KEYS]
    if unknown:
        raise FarmError(where(unknown[0]), "unknown field", f"allowed fields: {', '.join(_CAMPAIGN_KEYS)}")
    name = doc.get("name")
    if not isinstance(name, str) or not SHOT_ID.match(name):
        raise FarmError(where("name"), f"{name!r} is not a valid campaign name", _ID_RULE)
    defaults = _overrides(doc.get("defaults"), where("defaults"))
    shots = doc.get("shots")
    if shots is None and "shots_file" not in doc:
        raise FarmError(str(path), "no shots", "add `shots:` (a list) or `shots_file:` (a CSV or Parquet list)")
    if shots is not None and not isinstance(shots, list):
        raise FarmError(where("shots"), "must be a list of shots", "give each shot as `- motion: ... character: ...`")
    entries = [
        _Entry(entry, path.parent, lambda key, i=i: where("shots", i, *key.split(".")) if key else where("shots", i))
        for i, entry in enumerate(shots or [])
    ]
    if "shots_file" in doc:
        entries += _list_entries(_shots_file(doc["shots_file"], path.parent, where("shots_file")))
    if not entries:
        raise FarmError(where("shots"), "no shots", "add at least one shot with motion and character")
    priority = _priority(doc.get("priority"), where("priority"))
    return name, defaults, entries, _rights_required(doc.get("rights"), where), priority


def _rights_required(value: object, where: Callable[..., str]) -> bool:
    """The campaign's `rights: {required: true|false}`."""
    if value is None:
        return False
    if not isinstance(value, dict) or any(key != "required" for key in value):
        raise FarmError(where("rights"), "must be a mapping with the one field `required`", "write rights: {required: true}")
    if not isinstance(value.get("required", False), bool):
        raise FarmError(where("rights", "required"), f"{value['required']!r} is not true or false", "write rights: {required: true}")
    return value.get("required", False)


def _read_yaml(path: Path) -> tuple[object, yaml.Node | None]:
    """The document and its node tree, whose marks give line numbers. Safe: plain YAML types only."""
    try:
        loader = yaml.SafeLoader(path.read_text())
        try:
            root = loader.get_single_node()
            return (loader.construct_document(root) if root is not None else None), root
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise FarmError(str(path), f"not valid YAML{where}", "fix the syntax") from None


def _line(node: yaml.Node | None, keys: tuple[str | int, ...]) -> int:
    """1-based line of the deepest of `keys` (mapping keys or sequence indices) found below node:
    the line of the key itself when it is written, else of the mapping that lacks it."""
    line = node.start_mark.line if node is not None else 0
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == key), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line
        else:
            break
    return line + 1


def _dotted(keys: tuple[str | int, ...]) -> str:
    """('shots', 3, 'rights', 'license') -> 'shots[3].rights.license'."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")


def _shots_file(value: object, base: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise FarmError(where, "must be the path of a CSV or Parquet shot list", "e.g. shots_file: shots.csv")
    if _URI.match(value):
        raise FarmError(where, "must be a local file", "copy the shot list next to the campaign file")
    path = base / value
    if path.suffix.lower() not in _LIST_SUFFIXES:
        raise FarmError(where, f"{value!r} is not a .csv or .parquet file", "give a CSV or Parquet shot list")
    if not path.is_file():
        raise FarmError(where, f"{path} not found", "check the path (relative to the campaign file)")
    return path


# CSV and Parquet shot lists -------------------------------------------------------------------------


def _list_entries(path: Path) -> list[_Entry]:
    columns, rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_parquet(path)
    _check_columns(path, columns)
    entries = []
    for number, cells in enumerate(rows, start=1):
        if cells is None:  # a blank line in a CSV file
            continue

        def where(column: str, number: int = number) -> str:
            return f"{path} row {number}, column {column}" if column else f"{path} row {number}"

        entries.append(_Entry(_row_fields(cells, where), path.parent, where))
    if not entries:
        raise FarmError(str(path), "has no rows", "add one row per shot under the header")
    return entries


def _read_csv(path: Path) -> tuple[list[str], list[dict | None]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [c.strip() for c in next(reader, [])]
            records = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FarmError(str(path), f"not a readable CSV file ({exc})", "save it as UTF-8 CSV with a header row") from None
    rows: list[dict | None] = []
    for number, record in enumerate(records, start=1):
        if len(record) > len(header):
            raise FarmError(f"{path} row {number}", f"{len(record)} values for {len(header)} columns", "quote values that contain commas")
        rows.append(dict(zip(header, record)) if any(cell.strip() for cell in record) else None)
    return header, rows


def _read_parquet(path: Path) -> tuple[list[str], list[dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise FarmError(str(path), f"not a readable Parquet file ({exc})", "write the shot list with pyarrow or pandas") from None
    return table.column_names, table.to_pylist()


def _check_columns(path: Path, columns: list[str]) -> None:
    for column in columns:
        if column not in _LIST_COLUMNS:
            raise FarmError(f"{path} header, column {column!r}", "unknown column", f"allowed columns: {', '.join(_LIST_COLUMNS)}")
        if columns.count(column) > 1:
            raise FarmError(f"{path} header, column {column!r}", "appears twice", "keep one column of each name")
    for column in ("motion", "character"):
        if column not in columns:
            raise FarmError(f"{path} header", f"no {column} column", f"add a {column} column: the {_INPUT_NOUNS[column]} of each shot")


def _row_fields(cells: dict, where: Callable[[str], str]) -> dict:
    """A row's cells in the YAML shape: empty cells dropped, overrides split, rights.* gathered."""
    fields: dict = {}
    rights: dict = {}
    for column, value in cells.items():
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            continue
        if column.startswith("rights."):
            rights[column.removeprefix("rights.")] = value
        elif column == "overrides" and isinstance(value, str):
            fields[column] = value.split()
        elif column in ("variants", "priority"):
            fields[column] = _whole_number(value, where(column))
        else:
            fields[column] = value
    if rights:
        fields["rights"] = rights
    return fields


def _whole_number(value: object, where: str) -> object:
    """A cell's text or float (pandas writes integer columns with gaps as floats) as an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            fix = "give variants as a whole number >= 1" if where.endswith("variants") else "give a priority as a whole number, e.g. 10"
            raise FarmError(where, f"{value!r} is not a whole number", fix) from None
    return value


# Shots, whatever the file ---------------------------------------------------------------------------


def _expand(entries: list[_Entry]) -> list[CampaignShot]:
    """Check every entry, expand its variants, and refuse an id given twice."""
    shots: list[CampaignShot] = []
    first_use: dict[str, tuple[_Entry, int]] = {}
    for entry in entries:
        shot, overrides, variants = _shot(entry)
        priority = _priority(entry.fields.get("priority"), entry.where("priority"))
        for variant in range(1, variants + 1):
            shot_id = _variant_id(shot.shot_id, variant, entry)
            if shot_id is not None:
                if shot_id in first_use:
                    raise _duplicate(shot_id, (entry, variant), first_use[shot_id])
                first_use[shot_id] = (entry, variant)
            shots.append(CampaignShot(replace(shot, shot_id=shot_id), list(overrides), variant, variant - 1, entry.where(""),
                                      priority))
    return shots


def _shot(entry: _Entry) -> tuple[Shot, list[str], int]:
    where, fields = entry.where, entry.fields
    if not isinstance(fields, dict):
        raise FarmError(where(""), "each shot must be a mapping", "give at least `motion` and `character`")
    unknown = [key for key in fields if key not in _SHOT_KEYS]
    if unknown:
        raise FarmError(where(str(unknown[0])), "unknown field", f"allowed fields: {', '.join(_SHOT_KEYS)}")
    for key in ("motion", "character"):
        if fields.get(key) is None:
            raise FarmError(where(key), "missing", f"give the {_INPUT_NOUNS[key]}")
    shot_id = fields.get("id")
    if shot_id is not None and (not isinstance(shot_id, str) or not SHOT_ID.match(shot_id)):
        raise FarmError(where("id"), f"{shot_id!r} is not a valid id", _ID_RULE)
    prompt = fields.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise FarmError(where("prompt"), "must be text", "quote the prompt")
    shot = Shot(
        motion=_input(fields, "motion", entry), character=_input(fields, "character", entry),
        skeleton=_input(fields, "skeleton", entry), mask=_input(fields, "mask", entry),
        prompt=prompt or "", shot_id=shot_id, rights=_rights(fields.get("rights"), entry),
    )
    return shot, _overrides(fields.get("overrides"), where("overrides")), _variants(fields.get("variants"), where("variants"))


def _input(fields: dict, key: str, entry: _Entry) -> Path | str | None:
    """A local path, made absolute against the entry's folder, or a URI kept exactly as written."""
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FarmError(entry.where(key), "must be a path or an s3:// URI", f"give the {_INPUT_NOUNS[key]}")
    name = library_name(value) if key == "motion" else None
    if name is not None:  # resolved against the output's motion library when the campaign runs
        check_motion_name(name, entry.where(key))
        return value
    uri = _URI.match(value)
    if uri:
        if uri.group(1).lower() not in _URI_SCHEMES:
            raise FarmError(entry.where(key), f"unsupported URI scheme {uri.group(1)!r}", "use a local path, file:// or s3://bucket/key")
        return value
    path = Path(value)
    return path if path.is_absolute() else entry.base / path


def _rights(value: object, entry: _Entry) -> dict[str, str | bool | int | float]:
    """The rights as given: text, yes/no, numbers and dates are what people write in YAML (a date
    is recorded as ISO 8601 text, the manifest being JSON). A license_file path is made absolute
    against the entry's folder, like the inputs; URIs and URLs are kept as written."""
    where = entry.where
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FarmError(where("rights"), "must be a mapping", f"give any of {', '.join(_RIGHTS_KEYS)}")
    rights = {}
    for key, given in value.items():
        if key not in _RIGHTS_KEYS:
            raise FarmError(where(f"rights.{key}"), "unknown field", f"rights take {', '.join(_RIGHTS_KEYS)}")
        if isinstance(given, (datetime.date, datetime.datetime)):
            given = given.isoformat()
        elif isinstance(given, float) and not math.isfinite(given):
            given = str(given)
        elif not isinstance(given, (str, bool, int, float)):
            raise FarmError(where(f"rights.{key}"), f"{given!r} is not a value", "give text, yes/no, a number or a date")
        rights[key] = given
    if "license_file" in rights and not is_url(rights["license_file"]):
        rights["license_file"] = str(_input(rights, "license_file", entry))
    return rights


def _overrides(value: object, where: str) -> list[str]:
    """A campaign's overrides: render keys only (the trust boundary, farm.config.check_override)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FarmError(where, "must be a list of overrides like `match=video`", "fix the list")
    for override in value:
        check_override(override, campaign=True, where=where)
    return value


def _priority(value: object, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**9:
        raise FarmError(where, f"{value} is out of range", "give a priority between -1000000000 and 1000000000")
    if isinstance(value, bool) or not isinstance(value, int):
        raise FarmError(where, f"{value!r} is not a whole number",
                        "give a priority as a whole number, e.g. priority: 10 (higher starts sooner)")
    return value


def _variants(value: object, where: str) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FarmError(where, f"{value!r} is not a whole number >= 1", "give how many variants to render, e.g. variants: 3")
    return value


def _variant_id(shot_id: str | None, variant: int, entry: _Entry) -> str | None:
    if shot_id is None or variant == 1:
        return shot_id
    suffix = f"-v{variant}"
    if not SHOT_ID.match(shot_id + suffix):
        raise FarmError(
            entry.where("id"), f"{shot_id!r} is too long for its variant suffix {suffix}",
            f"shorten the id to at most {64 - len(suffix)} characters",
        )
    return shot_id + suffix


def _duplicate(shot_id: str, second: tuple[_Entry, int], first: tuple[_Entry, int]) -> FarmError:
    def named(use: tuple[_Entry, int]) -> str:
        entry, variant = use
        return entry.where("id") + (f" (variant {variant})" if variant > 1 else "")

    return FarmError(named(second), f"duplicate shot id {shot_id!r}, already used at {named(first)}", "give every shot its own id")
