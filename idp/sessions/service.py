"""SSO sessions: start at login, checked (idle and absolute timeout) on every request, ended
by logout. The cookie carries an opaque 256-bit value; the database keeps its SHA-256.

Reading the session (`current`) writes nothing: the upkeep it finds owed (ending a session
found expired, refreshing last_seen at most every `touch_every`) is `settle`'s, an
after_request step with a transaction of its own. Starting and ending sessions are writes in
the caller's transaction, which the caller commits.

The device cookie (`idp_device`, `__Host-idp_device` under an https issuer) marks the browser:
a random 128-bit id given at its first sign-in and kept for 400 days (renewed at each sign-in;
policies/session.toml `device_cookie_max_age`).
It is not a credential and signs nobody in; each session stores only its SHA-256
(`device_hash`), which the "new device" alert compares (idp.security.alerts). The raw id is never
logged or audited."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timedelta

from flask import Response, g, request
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import SQLAlchemyError

from idp import clock
from idp.accounts.models import User
from idp.context import policy, settings
from idp.core import events, request_log
from idp.core.crypto import digest
from idp.extensions import db
from idp.sessions.models import SsoSession

log = logging.getLogger("idp.sessions")

DEVICE_COOKIE = "idp_device"
# secrets.token_urlsafe(16): 22 base64url characters; anything else is ignored (a new device).
DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def start(user: User, *, acr: str, amr: list[str]) -> SsoSession:
    """A new session for a fresh sign-in; any session this browser had is ended (no fixation)."""
    old = current()
    if old is not None:
        end(old, "replaced")
    token = secrets.token_urlsafe(32)
    now = clock.now()
    device = device_id() or secrets.token_urlsafe(16)
    sso = SsoSession(id=secrets.token_urlsafe(16), token_hash=digest(token), user_id=user.id,
                     created_at=now, last_seen_at=now, auth_time=now, acr=acr, amr=amr,
                     ip=request.remote_addr, user_agent=(request.user_agent.string or "")[:300],
                     device_hash=digest(device))
    db.session.add(sso)
    g.device_cookie = device  # set (a new id) or renewed (the same id) by apply_cookie
    g.sso_cookie = token
    g.sso_session = sso
    request_log.note(sub=user.subject)  # now: after the commit the row would be read again
    return sso


def cookie_name() -> str:
    """The SSO cookie's name: `__Host-` prefixed under an https issuer (Secure, Path=/, no
    Domain: a sibling subdomain or a plain-http page cannot set or shadow it)."""
    name = policy().session.cookie_name
    return f"__Host-{name}" if settings().secure_cookies else name


def device_cookie_name() -> str:
    """The device cookie's name, prefixed like the SSO cookie's under an https issuer."""
    return f"__Host-{DEVICE_COOKIE}" if settings().secure_cookies else DEVICE_COOKIE


def device_id() -> str | None:
    """This browser's device id from its cookie, or None when absent or malformed."""
    value = request.cookies.get(device_cookie_name())
    if not value or not DEVICE_ID.fullmatch(value):
        return None
    return value


def current() -> SsoSession | None:
    """The live session of this request, or None. A read: it writes and commits nothing.

    A session past its idle or absolute timeout, or of a disabled account, counts as none
    from here on (its cookie is cleared) and is ended by `settle` once the view has run; a
    live one last seen more than `touch_every` ago has its last_seen refreshed there."""
    if "sso_session" in g:
        return g.sso_session
    g.sso_session = None
    token = request.cookies.get(cookie_name())
    if not token or len(token) > 128:
        return None
    sso = db.session.execute(
        select(SsoSession).where(SsoSession.token_hash == digest(token))).scalar_one_or_none()
    if sso is None or sso.ended_at is not None:
        g.sso_cookie = None
        return None
    now = clock.now()
    rules = policy().session
    reason = _expired(sso, now)
    if reason is not None:
        g.sso_upkeep = (sso, sso.id, reason)  # ended on sight: by settle, after the view
        g.sso_cookie = None
        return None
    if now - sso.last_seen_at > timedelta(seconds=rules.touch_every):
        g.sso_upkeep = (sso, sso.id, None)
    g.sso_session = sso
    request_log.note(sub=sso.user.subject)  # loaded by _expired; expired by a commit later
    return sso


def _expired(sso: SsoSession, now: datetime) -> str | None:
    """Why this session may not be used any more (its end reason), or None."""
    rules = policy().session
    if now - sso.last_seen_at > timedelta(seconds=rules.idle_timeout):
        return "idle"
    if now - sso.created_at > timedelta(seconds=rules.absolute_timeout):
        return "absolute"
    if sso.user.disabled:
        return "disabled"
    return None


def unusable(sso: SsoSession | None, now: datetime | None = None) -> str | None:
    """Why this session no longer stands behind what it issued (a session-bound refresh token,
    idp.oidc.server): gone, ended (its reason), past a timeout or of a disabled account; None
    while it lives. A read, like `current`."""
    if sso is None:
        return "gone"
    if sso.ended_at is not None:
        return sso.end_reason or "ended"
    return _expired(sso, now or clock.now())


def keep_alive(sid: str) -> None:
    """Activity in the session away from the IdP (a refresh at a relying party): its last_seen
    moves on, at most every `touch_every`. In the caller's transaction."""
    now = clock.now()
    db.session.execute(update(SsoSession).where(
        SsoSession.id == sid, SsoSession.ended_at.is_(None),
        SsoSession.last_seen_at < now - timedelta(seconds=policy().session.touch_every))
        .values(last_seen_at=now).execution_options(synchronize_session=False))


def settle(response: Response) -> Response:
    """after_request: the session upkeep `current()` found owed, in a transaction of its own:
    end the session it found expired (announcing it: back-channel logouts are owed), or
    refresh the last_seen of the live one. What the view left uncommitted is rolled back
    first; it did not mean to keep it. A failure is logged: the answer stands, the upkeep
    comes again at the next request (or from `idp sessions expire`)."""
    owed = g.pop("sso_upkeep", None)
    if owed is None:
        return response
    sso, sid, reason = owed
    if reason is None and g.get("sso_session") is not sso:
        return response  # the view ended or replaced the session it touched: nothing to do
    try:
        db.session.rollback()
        if reason is None:
            db.session.execute(update(SsoSession).where(
                SsoSession.id == sid, SsoSession.ended_at.is_(None))
                .values(last_seen_at=clock.now()).execution_options(synchronize_session=False))
        else:
            end_where(SsoSession.id == sid, reason=reason)
        db.session.commit()
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("session upkeep failed: %s", type(exc).__name__)
    return response


def end(sso: SsoSession, reason: str) -> None:
    """End this session (the browser's own, or any other one loaded)."""
    end_where(SsoSession.id == sso.id, reason=reason)
    if g.get("sso_session") is sso:
        g.sso_session = None
        g.sso_cookie = None


def end_where(*conditions: ColumnElement[bool], reason: str) -> list[str]:
    """End every live session matching `conditions`: the one place an SSO session ends
    (logout, idle or absolute timeout, sign-out everywhere, password change or reset, account
    disabled, helpdesk, replaced by a new sign-in). One UPDATE ... RETURNING, so a session
    ended twice at once is ended (and announced) once. The ended sessions are announced as
    the session_ended event (idp.core.events), in this transaction: back-channel logout
    (idp.oidc.backchannel) owes a logout token to every relying party that received tokens in
    one. In the caller's transaction; returns the ended sids."""
    sids = list(db.session.execute(
        update(SsoSession).where(SsoSession.ended_at.is_(None), *conditions)
        .values(ended_at=clock.now(), end_reason=reason)
        .returning(SsoSession.id)
        .execution_options(synchronize_session="fetch")).scalars())
    events.emit(events.SESSION_ENDED, sids=sids, reason=reason)
    return sids


def expire(now: datetime | None = None) -> dict[str, list[str]]:
    """End the sessions past their absolute or idle timeout (`idp sessions expire`, cron), so
    that relying parties hear of idle expiry without the browser coming back. What `current()`
    does on sight, for every session at once."""
    now = now or clock.now()
    rules = policy().session
    absolute = end_where(
        SsoSession.created_at < now - timedelta(seconds=rules.absolute_timeout),
        reason="absolute")
    idle = end_where(SsoSession.last_seen_at < now - timedelta(seconds=rules.idle_timeout),
                     reason="idle")
    return {"absolute": absolute, "idle": idle}


def apply_cookie(response: Response) -> Response:
    """after_request: set or clear the SSO cookie as the request decided, and set the device
    cookie at a sign-in."""
    if g.get("device_cookie"):
        response.set_cookie(device_cookie_name(), g.device_cookie,
                            max_age=policy().session.device_cookie_max_age,
                            httponly=True, samesite="Lax", secure=settings().secure_cookies,
                            path="/")
    if "sso_cookie" not in g:
        return response
    name = cookie_name()
    if g.sso_cookie:
        response.set_cookie(name, g.sso_cookie, httponly=True, samesite="Lax",
                            secure=settings().secure_cookies, path="/")
    else:
        response.delete_cookie(name, path="/", httponly=True, samesite="Lax",
                               secure=settings().secure_cookies)
    return response
