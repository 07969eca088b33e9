"""OpenID Connect Back-Channel Logout 1.0, the IdP's side.

When an SSO session ends (idp.sessions.service.end_where is the one place that happens), every
client that received tokens in it (an authorization code carrying its `sid`) and registered a
`backchannel_logout_uri` is owed a logout token: one row of BackchannelLogout. The token is a
JWT signed with the active RS256 key, `typ: logout+jwt`, with iss, aud (the client), iat, exp,
jti, sid, sub and the back-channel logout event, and never a nonce (spec §2.4).

Delivery is an HTTP POST (`application/x-www-form-urlencoded`, `logout_token=...`) with a short
timeout; HTTP 200 or 204 is success (§2.8). It is attempted once the response that ended the
session has gone out (a web request) or when the CLI command ends, and retried with exponential
back-off by `idp sessions deliver` (cron) and opportunistically after later logouts. Each
attempt is claimed with one compare-and-set UPDATE that also schedules the next one, so two
nodes (or a node and cron) never post the same attempt twice, and a node that dies mid-attempt
leaves the row due again later (idp.core.delivery, shared with the mail outbox; "after the
response" is idp.core.after_response).

The POST goes through the outbound client (idp/core/outbound.py), which checks the address the
URI resolves to when it connects: registration checked it too, but DNS answers change. A
policy refusal (the URI now points at loopback, a private network, cloud metadata, ...) makes
no connection, is recorded as the attempt's error, and abandons the delivery at once instead of
retrying it 20 times: the policy's answer will not change by waiting, and each retry would be
one more attempt to aim the IdP at an internal host. The client must fix its registration
(which re-checks), or an operator allow-list the address.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

import requests
from flask import Flask, g, has_app_context, has_request_context
from sqlalchemy import select, update

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core import delivery, events, outbound
from idp.core.after_response import run_after_response
from idp.core.delivery import DeliveryReport
from idp.extensions import db
from idp.keys.jwt import sign
from idp.oidc.models import AuthorizationCode, BackchannelLogout, Client

log = logging.getLogger("idp.backchannel")

EVENT = "http://schemas.openid.net/event/backchannel-logout"
TYP = "logout+jwt"
ALG = "RS256"
SUCCESS = (200, 204)
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,40}")
PENDING_FLAG = "backchannel_pending"   # g: this app context queued deliveries


# -- queueing ----------------------------------------------------------------------------------
def install(app: Flask) -> None:
    """Listen for ended SSO sessions (idp.core.events SESSION_ENDED)."""
    events.subscribe(app, events.SESSION_ENDED, on_session_ended)


def on_session_ended(sids: list[str], reason: str) -> None:
    enqueue(sids)


def enqueue(sids: Iterable[str]) -> int:
    """Owe a logout token, for each of these (just ended) sessions, to every client that got
    an authorization code in it and has a back-channel logout URI. Idempotent per (client,
    sid). In the caller's transaction; delivery starts after the response (or the CLI
    command). Returns how many deliveries were queued."""
    sids = sorted(set(sids))
    if not sids:
        return 0
    now = clock.now()
    rows = db.session.execute(
        select(AuthorizationCode.sid, AuthorizationCode.client_id, User.subject)
        .join(Client, Client.client_id == AuthorizationCode.client_id)
        .join(User, User.id == AuthorizationCode.user_id)
        .where(AuthorizationCode.sid.in_(sids), Client.backchannel_logout_uri.is_not(None),
               Client.backchannel_logout_uri != "")
        .distinct()).all()
    if not rows:
        return 0
    known = set(db.session.execute(
        select(BackchannelLogout.client_id, BackchannelLogout.sid)
        .where(BackchannelLogout.sid.in_(sids))).all())
    fresh = [(sid, client_id, subject) for sid, client_id, subject in rows
             if (client_id, sid) not in known]
    for sid, client_id, subject in fresh:
        db.session.add(BackchannelLogout(
            client_id=client_id, sid=sid, subject=subject, created_at=now, attempts=0,
            next_attempt_at=now))
    if fresh:
        _deliver_later(sorted({sid for sid, _, _ in fresh}))
    return len(fresh)


def _deliver_later(sids: list[str]) -> None:
    """Web request: deliver once the response has been sent (the caller commits first).
    Anything else (the CLI): remember, deliver_pending() sends after the commit."""
    if not has_app_context():
        return
    pending = g.setdefault(PENDING_FLAG, [])
    first = not pending
    pending.extend(sids)
    if has_request_context() and first:
        # One job per request; it sends every sid this request queues (the same list).
        run_after_response(lambda: _deliver(pending))


def _deliver(sids: list[str]) -> None:
    """After the response (a fresh app context, its own database session): this request's
    deliveries first, then whatever else is due, within the after-response time budget."""
    budget = time.monotonic() + policy().backchannel.after_response_budget
    deliver_due(sids=sids, deadline=budget)
    deliver_due(limit=20, deadline=budget)


def deliver_pending() -> DeliveryReport | None:
    """Outside a request (CLI): send what this app context queued, once it is committed."""
    sids = g.pop(PENDING_FLAG, None) if has_app_context() else None
    if not sids:
        return None
    db.session.rollback()  # what the command did not commit, it did not mean to keep
    return deliver_due(sids=sids)


# -- the logout token --------------------------------------------------------------------------
def logout_token(client_id: str, sid: str, subject: str) -> str:
    now = clock.timestamp()
    claims = {
        "iss": settings().issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + policy().backchannel.logout_token_lifetime,
        "jti": secrets.token_urlsafe(18),
        "sid": sid,
        "sub": subject,
        "events": {EVENT: {}},
    }
    return sign(claims, ALG, typ=TYP)


# -- delivery ----------------------------------------------------------------------------------
def backoff(attempts: int) -> timedelta:
    """Wait after the n-th failed attempt (policies/backchannel.toml; idp.core.delivery)."""
    return delivery.backoff(policy().backchannel, attempts)


def deliver_due(*, sids: list[str] | None = None, limit: int = 200,
                deadline: float | None = None) -> DeliveryReport:
    """Attempt every delivery that is due (of these sessions only, when given); commit each
    attempt. Stops starting new attempts at `deadline` (time.monotonic())."""
    report = DeliveryReport()
    now = clock.now()
    query = select(BackchannelLogout.id).where(
        BackchannelLogout.delivered_at.is_(None), BackchannelLogout.next_attempt_at.is_not(None),
        BackchannelLogout.next_attempt_at <= now)
    if sids is not None:
        query = query.where(BackchannelLogout.sid.in_(sorted(set(sids))))
    ids = db.session.execute(query.order_by(BackchannelLogout.next_attempt_at,
                                            BackchannelLogout.id).limit(limit)).scalars().all()
    db.session.commit()  # end the read: SQLite writers (other nodes) must not wait on us
    for row_id in ids:
        if deadline is not None and time.monotonic() > deadline:
            break
        _attempt(row_id, report)
    report.pending = db.session.execute(
        select(db.func.count()).select_from(BackchannelLogout).where(
            BackchannelLogout.delivered_at.is_(None),
            BackchannelLogout.next_attempt_at.is_not(None))).scalar_one()
    db.session.commit()
    return report


def _attempt(row_id: int, report: DeliveryReport) -> None:
    now = clock.now()
    row = db.session.get(BackchannelLogout, row_id, populate_existing=True)
    if row is None or row.delivered_at is not None or row.next_attempt_at is None or \
            row.next_attempt_at > now:
        db.session.commit()
        return
    seen, client_id, sid, subject = row.attempts, row.client_id, row.sid, row.subject
    claim = delivery.claim(BackchannelLogout, row_id, seen,
                           open_=BackchannelLogout.delivered_at.is_(None),
                           rules=policy().backchannel, now=now, delay=backoff(seen + 1))
    uri = db.session.execute(select(Client.backchannel_logout_uri).where(
        Client.client_id == client_id)).scalar_one_or_none()
    db.session.commit()
    if claim is None:
        return  # another node or cron took this attempt
    attempts, last = claim.attempts, claim.last
    report.attempted += 1
    final = True  # no point retrying: nothing to POST to, or the policy refuses the address
    if not uri:
        error = "the client has no backchannel_logout_uri any more"
    else:
        try:
            error = post_logout_token(uri, logout_token(client_id, sid, subject))
            final = False
        except outbound.OutboundRefused as exc:
            error = f"refused by the outbound policy: {exc.reason}"
    if error is None:
        db.session.execute(update(BackchannelLogout).where(BackchannelLogout.id == row_id)
                           .values(delivered_at=clock.now(), next_attempt_at=None,
                                   last_error=None)
                           .execution_options(synchronize_session=False))
        audit.record("logout_token.delivered", client_id=client_id, actor="idp", sid=sid,
                     attempts=attempts)
        report.delivered += 1
    else:
        values: dict = {"last_error": error[:200]}
        if final:
            values["next_attempt_at"] = None
            last = True
        db.session.execute(update(BackchannelLogout).where(BackchannelLogout.id == row_id)
                           .values(**values).execution_options(synchronize_session=False))
        log.warning("back-channel logout to client %s failed (attempt %d): %s", client_id,
                    attempts, error)
        report.failed += 1
        if last:
            audit.record("logout_token.abandoned", client_id=client_id, actor="idp", sid=sid,
                         attempts=attempts, error=error[:200])
            report.abandoned += 1
    db.session.commit()


def post_logout_token(uri: str, token: str) -> str | None:
    """POST the token through the outbound client; None on success (HTTP 200/204), else a
    short reason without secrets. OutboundRefused (the policy forbids the address) is the
    caller's: it ends the delivery."""
    try:
        response = outbound.client().post(
            uri, data={"logout_token": token}, timeout=policy().backchannel.request_timeout,
            headers={"Accept": "application/json", "Cache-Control": "no-store"})
    except requests.ConnectTimeout:
        return "connect timeout"
    except requests.Timeout:
        return "no answer in time"
    except outbound.ResponseTooLarge:
        return "answer too large"
    except requests.ConnectionError:
        return "connection refused or failed"
    except requests.RequestException as exc:
        return f"request failed ({type(exc).__name__})"
    if response.status_code in SUCCESS:
        return None
    return f"HTTP {response.status_code}{_error_code(response)}"


def _error_code(response: requests.Response) -> str:
    """The RP's OAuth-style `error` code, when it sent a small JSON body with one."""
    if response.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
        return ""
    try:
        code = json.loads(response.content).get("error")
    except (ValueError, AttributeError):
        return ""
    return f" {code}" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""


# -- reading the record ------------------------------------------------------------------------
def deliveries(sid: str | None = None) -> list[BackchannelLogout]:
    query = select(BackchannelLogout).order_by(BackchannelLogout.id)
    if sid is not None:
        query = query.where(BackchannelLogout.sid == sid)
    return list(db.session.execute(query).scalars())


def status(row: BackchannelLogout, now: datetime | None = None) -> str:
    if row.delivered_at is not None:
        return "delivered"
    if row.next_attempt_at is None:
        return "abandoned"
    return "due" if row.next_attempt_at <= (now or clock.now()) else "waiting"
