"""Security alerts as people read them on the console (admin/alerts.html): what happened, to
whom (name and username, not an id), when, from where (IP address and its place) and on what
device, and the alert's other facts with their names; never the raw JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from idp.accounts.models import User
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db
from idp.security.models import SecurityAlert

KINDS = {
    "unusual_sign_in": _l("Unusual sign-in"),
    "repeated_lockouts": _l("Account locked repeatedly"),
    "lockouts_from_ip": _l("Many accounts locked from one address"),
    "compromise_reported": _l("\"This wasn't me\" reported"),
    "breakglass": _l("Emergency access (break the glass)"),
    "breakglass_review_overdue": _l("Emergency access review overdue"),
    "fhir_user_unresolved": _l("FHIR practitioner not resolved"),
}
STATES = {"new": _l("new"), "acknowledged": _l("acknowledged"), "resolved": _l("resolved")}
MARK = {"new": _l("Mark new"), "acknowledged": _l("Acknowledge"), "resolved": _l("Resolve")}
REASONS = {
    "new_device": _l("new device or browser"),
    "new_network": _l("new network"),
    "simultaneous_sessions": _l("signed in from another network at the same time"),
}
FACTS = {
    "reasons": _l("Why"), "network": _l("Network"), "lockouts": _l("Lockouts"),
    "accounts": _l("Accounts locked"), "window": _l("Within"),
    "sessions_ended": _l("Sessions ended"),
    "reported_at": _l("Sign-in reported"), "reported_ip": _l("Reported sign-in from"),
    "episode": _l("Episode"), "reason": _l("Reason"), "purpose_of_use": _l("Purpose of use"),
    "ends_at": _l("Ends"), "status": _l("Status"), "matches": _l("Matches"),
}
# shown in their own columns, or internal references with no meaning to a reader
_NOT_FACTS = {"ip", "city", "country", "user_agent", "sid", "sid_marked", "reported_seq"}


@dataclass(frozen=True)
class AlertRow:
    alert: SecurityAlert
    what: str
    user: User | None
    where: str
    device: str
    facts: list[tuple[str, str]]


def _value(key: str, value: Any) -> str:
    if key == "reasons" and isinstance(value, list):
        return ", ".join(str(REASONS.get(r, r)) for r in value)
    if key == "window" and isinstance(value, int):
        return _("%(hours)s h", hours=round(value / 3600, 1)) if value >= 3600 else \
            _("%(minutes)s min", minutes=value // 60)
    if key in ("reported_at", "ends_at") and isinstance(value, str):
        return value[:16].replace("T", " ") + " UTC"
    if key == "episode" and isinstance(value, str):
        return value[:8]
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def present(alerts: list[SecurityAlert]) -> list[AlertRow]:
    ids = {a.user_id for a in alerts if a.user_id is not None}
    users = {u.id: u for u in db.session.execute(select(User).where(User.id.in_(ids))
                                                  ).scalars()} if ids else {}
    rows = []
    for alert in alerts:
        detail = alert.detail if isinstance(alert.detail, dict) else {}
        place = ", ".join(str(detail[k]) for k in ("city", "country") if detail.get(k))
        ip = detail.get("ip") or detail.get("reported_ip")
        where = f"{ip} ({place})" if ip and place else str(ip or place or "")
        facts = [(str(FACTS.get(key, key.replace("_", " "))), _value(key, value))
                 for key, value in detail.items()
                 if key not in _NOT_FACTS and value not in (None, "", [])]
        rows.append(AlertRow(alert, str(KINDS.get(alert.kind, alert.kind.replace("_", " "))),
                             users.get(alert.user_id) if alert.user_id else None, where,
                             str(detail.get("user_agent") or ""), facts))
    return rows
