"""The rights of a shot's inputs, as a campaign gives them, and the gate that refuses a shot whose
rights do not say where both inputs come from and that their subjects consented."""
from __future__ import annotations

import re

from farm.errors import FarmError

# What a shot's `rights` may hold. consent covers both inputs; motion_consent and character_consent
# one each. license_file: a licence document (a path, file:// or s3:// URI, copied into the shot
# folder and hashed) or an http(s) URL (recorded); usage: the final usage notes, carried into the
# manifest, the C2PA manifest and the report.
RIGHTS_KEYS = ("motion_source", "character_source", "license", "license_file", "consent", "motion_consent",
               "character_consent", "usage")
_URL = re.compile(r"^https?://", re.I)
_NO = {"", "no", "false", "none", "n/a", "na", "unknown", "-"}


def is_url(value: object) -> bool:
    """An http(s) address: recorded as it is, never fetched."""
    return isinstance(value, str) and bool(_URL.match(value))


def missing_rights(rights: dict) -> list[str]:
    """The rights a shot lacks for the gate: a source and a consent for each input. A value that
    says no (false, "no", "none", "unknown", empty) is no value."""
    missing = []
    for name in ("motion", "character"):
        if not _given(rights.get(f"{name}_source")):
            missing.append(f"{name}_source")
        if not (_given(rights.get(f"{name}_consent")) or _given(rights.get("consent"))):
            missing.append(f"{name}_consent (or consent)")
    return missing


def check_rights(rights: dict) -> None:
    """Raise FarmError when the gate refuses the rights (see missing_rights)."""
    missing = missing_rights(rights)
    if missing:
        raise FarmError("rights", f"refused by the rights gate (rights are required): no {', '.join(missing)}",
                        "give each input's source and the consent of the people in it in the shot's rights "
                        "(motion_source, character_source, consent)")


def _given(value: object) -> bool:
    if value is None or value is False:
        return False
    return str(value).strip().lower() not in _NO
