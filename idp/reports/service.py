"""Compliance reports over the audit trail and the account tables: role and EPCS permission
holdings over a date range, failed logins and lockouts by user and IP, MFA coverage by role and
factor type, dormant accounts. No Flask request objects: the console, the CLI and tests call
build() alike.

Extension point: idp.reports.registry (@report). Reports that need tables this module does
not know (licenses expiring in 30/60/90 days, applications past the 48 h verification SLA: the
onboarding work) register themselves there when their feature installs.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select

from idp import clock
from idp.accounts import settings as account_settings
from idp.accounts.models import User
from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.context import policy
from idp.epcs.models import EpcsPermission
from idp.extensions import db
from idp.mfa.factors.registry import registry as factor_registry
from idp.mfa.models import Factor
from idp.reports.registry import REPORTS, Range, report

FAILED_LOGIN_EVENTS = ("login.failure", "mfa.failure")
LOCKOUT_EVENT = "account.locked"
LOGIN_EVENT = "login.success"


class ReportError(ValueError):
    """Bad report name or parameters; str() is the readable reason."""


@dataclass
class Report:
    name: str
    title: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    range: Range | None
    generated_at: datetime = field(default_factory=clock.now)

    def as_json(self) -> dict[str, Any]:
        return {"report": self.name, "title": self.title,
                "generated_at": self.generated_at.isoformat(),
                "range": self.range.as_dict() if self.range else None,
                "columns": list(self.columns),
                "rows": [{c: _plain(r.get(c)) for c in self.columns} for r in self.rows]}

    def as_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([_cell(row.get(c)) for c in self.columns])
        return out.getvalue()


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else value


def _cell(value: Any) -> str:
    """A CSV cell; a leading = + - @ is quoted so spreadsheets do not run it as a formula."""
    text = "" if value is None else str(_plain(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _parse(value: str | None, name: str, end_of_day: bool) -> datetime | None:
    if not value:
        return None
    value = value.strip()[:40]
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time())
        else:
            moment = datetime.fromisoformat(value)
    except ValueError:
        raise ReportError(f"{name}: use a date such as 2026-01-31 or 2026-01-31T14:00") \
            from None
    return clock.aware(moment)


def parse_range(start: str | None, end: str | None) -> Range:
    """--from / --to: ISO dates (a `to` date counts its whole day) or date-times, UTC."""
    rules = policy().reports
    until = _parse(end, "to", True) or clock.now()
    since = _parse(start, "from", False) or until - timedelta(days=rules.default_range_days)
    if since > until:
        raise ReportError("from must not be after to")
    if until - since > timedelta(days=rules.max_range_days):
        raise ReportError(f"a report covers at most {rules.max_range_days} days")
    return Range(since, until)


def build(name: str, start: str | None = None, end: str | None = None) -> Report:
    spec = REPORTS.get(name)
    if spec is None:
        raise ReportError(f"unknown report {name[:40]!r}; known: {', '.join(sorted(REPORTS))}")
    span = parse_range(start, end) if spec.ranged else None
    columns = spec.columns() if callable(spec.columns) else spec.columns
    return Report(spec.name, spec.title, columns, spec.build(span), span)


def _users() -> dict[int, User]:
    return {u.id: u for u in db.session.execute(select(User)).scalars()}


# -- who held which role and the EPCS permission ------------------------------------------
@report("role_holdings", "Role and EPCS permission holdings",
        ("user_id", "username", "kind", "value", "held_from", "held_to", "granted_by"),
        ranged=True, description="Who held which role and the EPCS permission in the range "
        "(held_to empty: still held at the end of the range).")
def role_holdings(span: Range | None) -> list[dict[str, Any]]:
    assert span is not None
    rows: list[dict[str, Any]] = []
    changes: dict[int, list[AuditEvent]] = defaultdict(list)
    for event in db.session.execute(select(AuditEvent).where(
            AuditEvent.event == "user.role_changed").order_by(AuditEvent.seq)).scalars():
        if event.user_id is not None:
            changes[event.user_id].append(event)
    users = _users()
    for user in sorted(users.values(), key=lambda u: u.username):
        periods = _role_periods(user, changes.get(user.id, []))
        for role, since, until in periods:
            if since <= span.end and (until is None or until >= span.start):
                rows.append({"user_id": user.id, "username": user.username, "kind": "role",
                             "value": role, "held_from": since,
                             "held_to": until if until is not None and until <= span.end
                             else None, "granted_by": None})
    for item in db.session.execute(select(EpcsPermission).where(
            EpcsPermission.approved_at.is_not(None),
            EpcsPermission.approved_at <= span.end).order_by(EpcsPermission.id)).scalars():
        if item.revoked_at is not None and item.revoked_at < span.start:
            continue
        holder = users.get(item.user_id)
        rows.append({"user_id": item.user_id, "username": holder.username if holder else None,
                     "kind": "epcs_permission", "value": "epcs", "held_from": item.approved_at,
                     "held_to": item.revoked_at if item.revoked_at and
                     item.revoked_at <= span.end else None,
                     "granted_by": f"admin:{item.proposed_by} + admin:{item.approved_by}"})
    return rows


def _role_periods(user: User, changes: list[AuditEvent]
                  ) -> list[tuple[str, datetime, datetime | None]]:
    """(role, from, until) from the account's creation and its user.role_changed events
    (detail {"from": old, "to": new})."""
    first = (changes[0].detail or {}).get("from") if changes else None
    role, since = first or user.role, clock.aware(user.created_at)
    periods = []
    for change in changes:
        at = clock.aware(change.at)
        periods.append((role, since, at))
        role, since = (change.detail or {}).get("to") or role, at
    periods.append((role, since, None))
    return periods


# -- failed logins and lockouts ------------------------------------------------------------
@report("failed_logins", "Failed logins and lockouts by user and IP",
        ("user_id", "username", "ip", "failed_logins", "lockouts", "last_failure"),
        ranged=True, description="Wrong passwords and second factors (login.failure, "
        "mfa.failure) and account lockouts, per account and client address.")
def failed_logins(span: Range | None) -> list[dict[str, Any]]:
    assert span is not None
    events = db.session.execute(select(AuditEvent).where(
        AuditEvent.event.in_((*FAILED_LOGIN_EVENTS, LOCKOUT_EVENT)),
        AuditEvent.at >= span.start, AuditEvent.at <= span.end)).scalars()
    failures: Counter = Counter()
    lockouts: Counter = Counter()
    last: dict[tuple, datetime] = {}
    for event in events:
        key = (event.user_id, event.ip)
        if event.event == LOCKOUT_EVENT:
            lockouts[key] += 1
        else:
            failures[key] += 1
            last[key] = max(last.get(key, event.at), event.at)
    users = _users()
    rows = []
    for key in set(failures) | set(lockouts):
        user_id, ip = key
        holder = users.get(user_id) if user_id is not None else None
        rows.append({"user_id": user_id, "username": holder.username if holder else None,
                     "ip": ip, "failed_logins": failures[key], "lockouts": lockouts[key],
                     "last_failure": last.get(key)})
    return sorted(rows, key=lambda r: (-r["lockouts"], -r["failed_logins"],
                                       r["username"] or "", r["ip"] or ""))


# -- MFA coverage --------------------------------------------------------------------------
def _factor_kinds() -> list[str]:
    """The kinds a user enrolls (not recovery codes), from the factor registry, in order."""
    return [t.kind for t in factor_registry().stored()]


def _coverage_columns() -> tuple[str, ...]:
    return ("role", "accounts", "with_mfa", "coverage", "percent", *_factor_kinds())


@report("mfa_coverage", "MFA coverage by role and factor type", _coverage_columns,
        ranged=False,
        description="Enabled accounts per role, how many have a confirmed second factor, and "
        "how many have each factor type (an account can have several).")
def mfa_coverage(span: Range | None) -> list[dict[str, Any]]:
    accounts: Counter = Counter()
    covered: Counter = Counter()
    by_kind: dict[str, Counter] = defaultdict(Counter)
    kinds = _factor_kinds()
    held: dict[int, set[str]] = defaultdict(set)
    for user_id, kind in db.session.execute(select(Factor.user_id, Factor.kind).where(
            Factor.confirmed_at.is_not(None))):
        held[user_id].add(kind)
    for user in db.session.execute(select(User).where(User.disabled.is_(False))).scalars():
        accounts[user.role] += 1
        mine = held.get(user.id, set()) & set(kinds)
        if mine:
            covered[user.role] += 1
        for kind in mine:
            by_kind[user.role][kind] += 1
    rows = []
    for role in sorted(accounts):
        total, with_mfa = accounts[role], covered[role]
        rows.append({"role": role, "accounts": total, "with_mfa": with_mfa,
                     "coverage": f"{with_mfa}/{total}",
                     "percent": round(100 * with_mfa / total, 1),
                     **{kind: by_kind[role][kind] for kind in kinds}})
    return rows


# -- dormant accounts ----------------------------------------------------------------------
@report("dormant_accounts", "Dormant accounts",
        ("user_id", "username", "role", "last_login", "days_inactive"), ranged=False,
        description="Enabled accounts with no sign-in for the policy's dormant_after_days "
        "(policies/reports.toml); the console can disable each.")
def dormant_accounts(span: Range | None) -> list[dict[str, Any]]:
    now = clock.now()
    limit = timedelta(days=policy().reports.dormant_after_days)
    last = dict(db.session.execute(select(AuditEvent.user_id, func.max(AuditEvent.at)).where(
        AuditEvent.event == LOGIN_EVENT, AuditEvent.user_id.is_not(None))
        .group_by(AuditEvent.user_id)).all())
    rows = []
    for user in db.session.execute(select(User).where(User.disabled.is_(False))
                                   .order_by(User.username)).scalars():
        seen = clock.aware(last[user.id]) if user.id in last else None
        since = seen or clock.aware(user.created_at)
        if now - since >= limit:
            rows.append({"user_id": user.id, "username": user.username, "role": user.role,
                         "last_login": seen, "days_inactive": (now - since).days})
    return rows


def disable_dormant(user_id: int, *, actor: str) -> bool:
    """Disable one account the dormant report lists (checked again now); audited. False when
    the account is not (or no longer) dormant."""
    row = next((r for r in dormant_accounts(None) if r["user_id"] == user_id), None)
    if row is None:
        return False
    user = db.session.get(User, user_id)
    account_settings.set_disabled(user, True, actor=actor)
    audit.record("user.dormant_disabled", user_id=user.id, actor=actor,
                 days_inactive=row["days_inactive"])
    return True
