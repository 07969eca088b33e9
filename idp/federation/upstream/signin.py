"""After an upstream proved who the person is: the local rules still apply (disabled, lockout,
our second factor unless policy trusts the upstream's, the gates, security alerts), and the
session's amr says what really happened: `fed`, plus `mfa` only when a second factor was
used (ours, or the upstream's when policy trusts it).

Two purposes of the sign-in flow (idp.mfa.flow) are added: "upstream" (a linked identity
signed in upstream, our second factor follows) and "upstream_link" (an unknown identity whose
person proved an existing account by password, our second factor follows, then the link is
made)."""

from __future__ import annotations

from typing import Any

from flask import Flask, session

from idp import clock
from idp.accounts import lockout
from idp.accounts.models import User
from idp.audit import service as audit
from idp.core import crypto
from idp.extensions import db
from idp.federation.upstream import service
from idp.federation.upstream.models import Upstream, UpstreamLink
from idp.mfa import flow
from idp.mfa.models import LoginAttempt
from idp.security import alerts
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession

LOGIN_KEY = "upstream_login"     # flow cookie: the upstream sign-in waiting for our factor
PENDING_KEY = "upstream_pending"  # flow cookie: the handle of a held unknown identity
STATE_KEY = "upstream_state"     # flow cookie: the state of the trip under way


def install(app: Flask) -> None:
    flow.register_purpose(app, flow.Purpose("upstream", _complete_upstream))
    flow.register_purpose(app, flow.Purpose("upstream_link", _complete_link,
                                            password_first=True))


def refusal(user: User) -> str | None:
    if user.disabled:
        return "disabled"
    if lockout.is_locked(user):
        return "locked"
    return None


def start(user: User, row: Upstream, amr: list[str], acr: str, subject: str,
          sid: str | None, id_token: str | None, via: str) -> SsoSession | None:
    if not lockout.register_success(user):
        return None
    sso = sessions.start(user, acr=acr, amr=amr)
    db.session.flush()
    service.record_session(sso, row, subject, sid, id_token)
    audit.record("login.success", user_id=user.id, amr=amr, acr=acr, upstream=row.name,
                 via=via)
    alerts.check_sign_in(user, sso)
    return sso


def linked(user: User, row: Upstream, link: UpstreamLink, done: service.Upstreamed,
           next_url: str) -> SsoSession | LoginAttempt | None:
    """A linked identity signed in upstream: a session now when policy trusts the upstream's
    second factor and it was used, else an attempt waiting for ours."""
    link.last_used_at = clock.now()
    sid = done.claims.get("sid") if isinstance(done.claims.get("sid"), str) else None
    if service.mfa_at_upstream(row, done.claims):
        return start(user, row, ["fed", "mfa"], service.rules().trusted_mfa_acr,
                     link.subject, sid, done.id_token, "upstream_mfa")
    attempt = flow.begin(user, next_url, purpose="upstream")
    attempt.amr = ["fed"]
    session[LOGIN_KEY] = {"attempt": attempt.id, "upstream": row.id, "sub": link.subject,
                          "sid": sid, "id_token": crypto.encrypt(done.id_token)}
    audit.record("login.upstream_verified", user_id=user.id, upstream=row.name)
    return attempt


def _complete_upstream(attempt: LoginAttempt, user: User, verified: flow.Verified
                       ) -> SsoSession | None:
    held: Any = session.pop(LOGIN_KEY, None)
    if not isinstance(held, dict) or held.get("attempt") != attempt.id:
        return None
    row = db.session.get(Upstream, held.get("upstream"))
    if row is None or refusal(user):
        return None
    amr = ["fed"] + [a for a in verified.amr if a != "fed"]
    if verified.kind is not None and "mfa" not in amr:
        amr.append("mfa")
    token = crypto.decrypt(held["id_token"]) if held.get("id_token") else None
    return start(user, row, amr, verified.acr, str(held.get("sub")), held.get("sid"), token,
                 "upstream")


def _complete_link(attempt: LoginAttempt, user: User, verified: flow.Verified
                   ) -> SsoSession | None:
    item = service.pending(session.pop(PENDING_KEY, None))
    if item is None or not service.use_pending(item):
        return None
    row = db.session.get(Upstream, item.upstream_id)
    if row is None or service.link_pending(item, user, "proven") is None:
        return None
    amr = ["fed"] + [a for a in verified.amr if a != "fed"]
    if verified.kind is not None and "mfa" not in amr:
        amr.append("mfa")
    return start(user, row, amr, verified.acr, item.subject, item.upstream_sid, None,
                 "upstream_link")
