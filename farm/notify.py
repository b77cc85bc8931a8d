"""Alerts: one message at the end of every campaign run to the operator's apprise URLs (notify.urls),
with the run's counts and where its report is. A message that cannot be sent is a warning, never a
failed campaign: the renders are done and recorded whatever a chat server says."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    """title and body as any apprise service shows them; kind: success, warning (shots flagged
    for a re-render, or a run cancelled by `farm cancel`) or failure (failed shots, or a run interrupted before every shot was done)."""

    title: str
    body: str
    kind: str


def campaign_message(doc: dict, uri: str, report: str | None) -> Message:
    """The message of a campaign run from its final record (campaign.json's content); uri: the
    campaign folder; report: the campaign page's URI, None when it could not be made."""
    c = doc["counts"]
    if doc["status"] == "interrupted":
        kind, outcome = "failure", f"interrupted after {c['shots_done']} of {c['shots_total']} shots"
    elif doc["status"] == "cancelled":
        kind, outcome = "warning", f"cancelled after {c['shots_done']} of {c['shots_total']} shots"
    elif c["shots_failed"]:
        kind, outcome = "failure", f"finished with {c['shots_failed']} failed shot{'s' if c['shots_failed'] != 1 else ''}"
    elif c["shots_flagged"]:
        kind, outcome = "warning", f"finished; {c['shots_flagged']} shot{'s' if c['shots_flagged'] != 1 else ''} need a re-render"
    else:
        kind, outcome = "success", "finished"
    lines = [
        f"{c['shots_done']}/{c['shots_total']} shots done: {c['shots_succeeded']} rendered, {c['shots_reused']} reused, "
        f"{c['shots_failed']} failed, {c['shots_flagged']} need a re-render",
        f"windows rendered {c['windows_rendered']}, reused {c['windows_reused']}",
    ]
    if "gpu_seconds" in c:
        money = "" if c.get("money") is None else f", money {c['money']:.4g}"
        lines.append(f"cost: {c['gpu_seconds']:g} GPU-seconds, {c['cpu_seconds']:g} CPU-seconds{money}")
    failed = [r["shot_id"] for r in doc["shots"] if r["status"] == "failed"]
    flagged = [r["shot_id"] for r in doc["shots"] if r.get("needs_rerender")]
    for label, shots in (("failed", failed), ("re-render", flagged)):
        if shots:
            lines.append(f"{label}: {', '.join(shots[:10])}{f' and {len(shots) - 10} more' if len(shots) > 10 else ''}")
    lines.append(f"report: {report}" if report else f"output: {uri} (no campaign report)")
    return Message(f"motion-farm: campaign {doc['name']} {outcome}", "\n".join(lines), kind)


def send(urls: list[str], message: Message) -> list[str]:
    """Send `message` to every URL; returns a warning per URL that is not understood and one if
    any send failed (apprise does not say which)."""
    import apprise

    # 1. The services; a URL apprise does not understand is named (it is the operator's own).
    warnings, services = [], apprise.Apprise()
    for url in urls:
        if not services.add(url):
            warnings.append(f"notification: {_shown(url)} is not an apprise URL (see README \"Operating the farm\")")
    # 2. One message to all of them.
    kind = {"success": apprise.NotifyType.SUCCESS, "warning": apprise.NotifyType.WARNING, "failure": apprise.NotifyType.FAILURE}
    if len(services) and not services.notify(body=message.body, title=message.title, notify_type=kind[message.kind]):
        warnings.append(f"notification: could not be sent to every one of {len(services)} service(s) (apprise logs say why)")
    return warnings


def _shown(url: str) -> str:
    """A URL's scheme and host only: the rest may hold a token, which no warning repeats."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/')[0].rpartition('@')[2]}/…" if rest else "a URL"
