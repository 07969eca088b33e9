"""Admin console logic: user search, audit queries and JSON Lines export, initial access
tokens for dynamic client registration, security alert states, role changes. No Flask request
objects."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, func, or_, select, update

from idp import clock
from idp.accounts import settings as account_settings
from idp.accounts.models import User
from idp.admin.models import InitialAccessToken
from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.context import policy
from idp.core.crypto import digest
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.epcs import service as epcs
from idp.extensions import db
from idp.oidc.models import Client
from idp.security.models import SecurityAlert
from idp.sessions.models import SsoSession

SEARCH_LIMIT = 50
AUDIT_PAGE = 100
ALERT_STATES = ("new", "acknowledged", "resolved")


# -- users ---------------------------------------------------------------------------------
def search_users(text: str) -> list[User]:
    """Accounts whose name, username, NPI or email contains the text (case-insensitive)."""
    text = (text or "").strip()[:100]
    if not text:
        return []
    like = f"%{text.lower().replace('%', '').replace('_', '')}%"
    full_name = func.lower(User.given_name + " " + User.family_name)
    return list(db.session.execute(select(User).where(or_(
        func.lower(User.username).like(like), func.lower(User.email).like(like),
        User.npi.like(like), full_name.like(like))).order_by(User.username)
        .limit(SEARCH_LIMIT)).scalars())


def user_page(text: str, page: int, locked: bool = False) -> tuple[list[User], int]:
    """One page (from 1) of the accounts matching the text (every account for no text; only
    the locked ones with `locked`), by username, and how many match."""
    text = (text or "").strip()[:100]
    query = select(User)
    if locked:
        query = query.where(User.locked_until > clock.now())
    if text:
        like = f"%{text.lower().replace('%', '').replace('_', '')}%"
        full_name = func.lower(User.given_name + " " + User.family_name)
        query = query.where(or_(func.lower(User.username).like(like),
                                func.lower(User.email).like(like), User.npi.like(like),
                                full_name.like(like)))
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = db.session.execute(query.order_by(User.username).offset((page - 1) * SEARCH_LIMIT)
                              .limit(SEARCH_LIMIT)).scalars()
    return list(rows), int(total)


def locked_count() -> int:
    return int(db.session.execute(select(func.count()).select_from(User).where(
        User.locked_until > clock.now())).scalar_one())


def live_session_count() -> int:
    """Sessions that still work (not ended, within the idle and absolute timeouts)."""
    now, rules = clock.now(), policy().session
    return int(db.session.execute(select(func.count()).select_from(SsoSession).where(
        SsoSession.ended_at.is_(None),
        SsoSession.last_seen_at > now - timedelta(seconds=rules.idle_timeout),
        SsoSession.created_at > now - timedelta(seconds=rules.absolute_timeout))).scalar_one())


def new_alert_count() -> int:
    return int(db.session.execute(select(func.count()).select_from(SecurityAlert).where(
        SecurityAlert.state == "new")).scalar_one())


def pending_client_count() -> int:
    """Self-registered clients waiting for an administrator's decision."""
    return int(db.session.execute(select(func.count()).select_from(Client).where(
        Client.pending_since.is_not(None))).scalar_one())


def recent_logins(user_id: int, limit: int = 20) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(
        AuditEvent.user_id == user_id,
        AuditEvent.event.in_(("login.success", "login.failure", "alert.unusual_sign_in")))
        .order_by(AuditEvent.seq.desc()).limit(limit)).scalars())


ROLE_UNKNOWN = _l("Unknown role: choose one of the roles listed.")
ROLE_UNCHANGED = _l("The account already holds that role; nothing was changed.")
ROLE_SELF = _l("You cannot change your own role.")


def change_role(user: User, new_role: str, admin: User) -> str | None:
    """Give the account another role (policies/roles.toml); None, or why it was refused.

    Audited `user.role_changed` {"from", "to"} (the role_holdings report reads it) by
    "admin:<id>". Every session ends and every token is revoked, so the new role only reaches
    relying parties in new tokens. A role that is not clinical cannot hold the EPCS permission
    (idp.epcs.service.propose): a live one (granted or proposed) is revoked as /admin/epcs
    does. All in the caller's transaction."""
    roles = policy().roles
    if new_role not in roles:
        return str(ROLE_UNKNOWN)
    if new_role == user.role:
        return str(ROLE_UNCHANGED)
    if user.id == admin.id:
        return str(ROLE_SELF)
    actor = f"admin:{admin.id}"
    old = user.role
    user.role = new_role
    audit.record("user.role_changed", user_id=user.id, actor=actor,
                 **{"from": old, "to": new_role})
    held = epcs.live_permission(user.id)
    if held is not None and not roles[new_role].clinical:
        epcs.revoke(held, admin)
    account_settings.sign_out_everywhere(user, "role_changed", actor=actor)
    return None


# -- audit ---------------------------------------------------------------------------------
class FilterError(ValueError):
    """A filter value cannot be used; the message says which."""


@dataclass(frozen=True)
class AuditFilter:
    user: str = ""
    event: str = ""
    client_id: str = ""
    ip: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def from_args(cls, args: dict) -> AuditFilter:
        return cls(**{k: str(args.get(k, "") or "").strip()[:200]
                      for k in cls.__dataclass_fields__})

    def as_args(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


def _when(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(_("%(field)s: use a date and time such as 2026-01-31T14:00",
                            field=name)) from None
    return clock.aware(parsed)


def audit_query(flt: AuditFilter) -> Select:
    """Events matching the filter, newest first. `user` is a user id, username or NPI;
    `event` an exact name, or a prefix ending in '.' or '*' (login.*)."""
    query = select(AuditEvent)
    if flt.user:
        if flt.user.isdigit() and len(flt.user) < 10:
            user_id = int(flt.user)
        else:
            found = db.session.execute(select(User.id).where(or_(
                func.lower(User.username) == flt.user.lower(), User.npi == flt.user))).first()
            user_id = found[0] if found else -1
        query = query.where(AuditEvent.user_id == user_id)
    if flt.event:
        if flt.event.endswith(("*", ".")):
            prefix = flt.event.rstrip("*")
            query = query.where(AuditEvent.event.startswith(prefix, autoescape=True))
        else:
            query = query.where(AuditEvent.event == flt.event)
    if flt.client_id:
        query = query.where(AuditEvent.client_id == flt.client_id)
    if flt.ip:
        query = query.where(AuditEvent.ip == flt.ip)
    since, until = _when(flt.since, "since"), _when(flt.until, "until")
    if since:
        query = query.where(AuditEvent.at >= since)
    if until:
        query = query.where(AuditEvent.at <= until)
    return query.order_by(AuditEvent.seq.desc())


def audit_page(flt: AuditFilter, before: int | None = None) -> list[AuditEvent]:
    query = audit_query(flt)
    if before:
        query = query.where(AuditEvent.seq < before)
    return list(db.session.execute(query.limit(AUDIT_PAGE)).scalars())


def event_record(item: AuditEvent) -> dict:
    """An event with every field its hash covers, as the chain hashed it."""
    return {"seq": item.seq, "at": clock.aware(item.at).isoformat(), "event": item.event,
            "user_id": item.user_id, "client_id": item.client_id, "ip": item.ip,
            "actor": item.actor, "user_agent": item.user_agent, "detail": item.detail or {},
            "chain": item.chain, "chain_seq": item.chain_seq, "anchors": item.anchors,
            "prev_hash": item.prev_hash, "hash": item.hash}


def export_lines(flt: AuditFilter, batch: int = 500) -> Iterator[str]:
    """JSON Lines, oldest first, read in batches by seq so memory stays flat."""
    base = audit_query(flt).order_by(None).order_by(AuditEvent.seq)
    last = 0
    while True:
        rows = list(db.session.execute(base.where(AuditEvent.seq > last).limit(batch))
                    .scalars())
        if not rows:
            return
        for item in rows:
            yield json.dumps(event_record(item), sort_keys=True, separators=(",", ":")) + "\n"
        last = rows[-1].seq


def verify_lines(lines: Iterable[str]) -> tuple[bool, int, int | None]:
    """Re-hash exported lines. Every line must hash to its `hash`; consecutive positions of
    one chain must link (prev_hash = the hash of the line before in that chain). A filtered
    export has gaps: those are not links. Returns (intact, lines checked, first broken seq)."""
    last: dict[int, dict] = {}   # chain -> its previous line
    count = 0
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        chain, position = row.get("chain", 1), row.get("chain_seq", row["seq"])
        digest_ = audit._hash(row["prev_hash"], position, row["at"], row["event"],
                              row["user_id"], row["client_id"], row["ip"], row["actor"],
                              row["user_agent"], row["detail"], row.get("anchors"))
        prev = last.get(chain)
        linked = prev is None or prev.get("chain_seq", prev["seq"]) + 1 != position or \
            prev["hash"] == row["prev_hash"]
        if digest_ != row["hash"] or not linked:
            return False, count, row["seq"]
        last[chain], count = row, count + 1
    return True, count, None


# -- dynamic client registration: initial access tokens ------------------------------------
@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once
    expires_at: datetime
    uses: int


def issue_initial_token(*, actor: str, lifetime: int, uses: int = 1,
                        note: str | None = None) -> IssuedToken:
    if lifetime <= 0 or uses <= 0:
        raise ValueError("lifetime and uses must be positive")
    token = secrets.token_urlsafe(32)
    now = clock.now()
    item = InitialAccessToken(token_hash=digest(token), created_at=now,
                              expires_at=now + timedelta(seconds=lifetime), uses_left=uses,
                              created_by=actor, note=(note or None) and note[:200])
    db.session.add(item)
    db.session.flush()
    audit.record("registration.token_issued", actor=actor, token_id=item.id, uses=uses,
                 expires_at=item.expires_at.isoformat())
    return IssuedToken(token, item.expires_at, uses)


def use_initial_token(token: str) -> int | None:
    """Spend one use of a valid initial access token in one UPDATE; its id, or None."""
    if not token or len(token) > 128:
        return None
    row = db.session.execute(
        update(InitialAccessToken).where(
            InitialAccessToken.token_hash == digest(token), InitialAccessToken.uses_left > 0,
            InitialAccessToken.expires_at > clock.now())
        .values(uses_left=InitialAccessToken.uses_left - 1)
        .returning(InitialAccessToken.id).execution_options(synchronize_session=False)).first()
    return row[0] if row else None


# -- alerts --------------------------------------------------------------------------------
def alerts(state: str | None = None, limit: int = 100) -> list[SecurityAlert]:
    query = select(SecurityAlert).order_by(SecurityAlert.id.desc()).limit(limit)
    if state in ALERT_STATES:
        query = query.where(SecurityAlert.state == state)
    return list(db.session.execute(query).scalars())


def set_alert_state(alert: SecurityAlert, state: str, *, actor: str) -> None:
    if state not in ALERT_STATES:
        raise ValueError("unknown alert state")
    alert.state, alert.updated_by = state, actor
    audit.record("alert.state_changed", user_id=alert.user_id, actor=actor, alert_id=alert.id,
                 state=state)
