"""The second step of a sign-in, and step-up: which factors a user may use, the pending login
attempt, and finishing it into an SSO session with the right acr and amr."""

from __future__ import annotations

import secrets
from datetime import timedelta

from flask import session
from sqlalchemy import select, update

from idp import clock
from idp.accounts import lockout
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy
from idp.extensions import db
from idp.mfa.models import Factor, LoginAttempt
from idp.security import alerts
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession

PREFERENCE = ("webauthn", "totp", "sms", "email")
COOKIE_KEY = "mfa_attempt"


def factors(user: User, *, min_acr: str | None = None) -> list[Factor]:
    """Confirmed factors the user's role allows, strongest kinds first."""
    mfa = policy().mfa
    allowed = set(mfa.allowed(user.role))
    rows = db.session.execute(select(Factor).where(
        Factor.user_id == user.id, Factor.confirmed_at.is_not(None))).scalars().all()
    usable = [f for f in rows if f.kind in allowed]
    if min_acr is not None and min_acr == policy().epcs.acr:
        # EPCS: the hardware factor of the ceremony (the password was entered just before).
        usable = [f for f in usable if f.kind in policy().epcs.hardware_factors]
    elif min_acr is not None:
        rank = policy().assurance.rank
        usable = [f for f in usable if rank(mfa.factors[f.kind].acr) >= rank(min_acr)]
    return sorted(usable, key=lambda f: (PREFERENCE.index(f.kind) if f.kind in PREFERENCE
                                         else 99, f.id))


def needs_enrollment(user: User) -> bool:
    return policy().mfa.required and not factors(user)


def achievable_acr(user: User) -> str:
    """The strongest acr this user can reach with what is enrolled now."""
    assurance = policy().assurance
    best = assurance.password_acr
    for factor in factors(user):
        acr = policy().mfa.factors[factor.kind].acr
        if assurance.rank(acr) > assurance.rank(best):
            best = acr
    return best


def begin(user: User, next_url: str, *, purpose: str = "login", target_acr: str | None = None
          ) -> LoginAttempt:
    """Record a password-verified (or signed-in, for step-up) user waiting for a factor."""
    now = clock.now()
    attempt = LoginAttempt(
        id=secrets.token_urlsafe(24), user_id=user.id, purpose=purpose,
        amr=["pwd"] if purpose == "login" else [], target_acr=target_acr, created_at=now,
        expires_at=now + timedelta(seconds=policy().mfa.login_attempt_lifetime))
    db.session.add(attempt)
    session[COOKIE_KEY] = {"id": attempt.id, "next": next_url}
    return attempt


def current() -> tuple[LoginAttempt, User, str] | None:
    """The live attempt this browser holds, its user and where to go after it."""
    held = session.get(COOKIE_KEY)
    if not isinstance(held, dict) or not isinstance(held.get("id"), str):
        return None
    attempt = db.session.get(LoginAttempt, held["id"])
    if attempt is None or attempt.completed_at is not None or attempt.expires_at <= clock.now():
        return None
    user = db.session.get(User, attempt.user_id)
    if user is None or user.disabled:
        return None
    if attempt.purpose in ("stepup", "epcs"):
        sso = sessions.current()
        if sso is None or sso.user_id != user.id:
            return None
    return attempt, user, str(held.get("next") or "/account")


def abandon() -> None:
    session.pop(COOKIE_KEY, None)


def finish(attempt: LoginAttempt, user: User, factor: Factor | None) -> SsoSession | None:
    """Complete the attempt with `factor` (None: MFA not required and none enrolled)."""
    mfa = policy().mfa
    assurance = policy().assurance
    done = db.session.execute(
        update(LoginAttempt).where(LoginAttempt.id == attempt.id,
                                   LoginAttempt.completed_at.is_(None))
        .values(completed_at=clock.now()).execution_options(synchronize_session=False)).rowcount
    if not done:
        return None  # finished already (a double submit)
    amr = list(attempt.amr or [])
    acr = assurance.password_acr
    if factor is not None:
        spec = mfa.factors[factor.kind]
        amr += [a for a in spec.amr if a not in amr]
        acr = spec.acr
        if "pwd" in amr and "mfa" not in amr:
            amr.append("mfa")
        factor.last_used_at = clock.now()
    abandon()
    if attempt.purpose == "epcs":  # a signing ceremony: its result stays off the session
        from idp.epcs import service as epcs

        epcs.complete(attempt, user, factor, amr)
        return sessions.current()
    if attempt.purpose == "stepup":
        sso = sessions.current()
        if sso is None:
            return None
        merged = list(sso.amr or []) + [a for a in amr if a not in (sso.amr or [])]
        if assurance.rank(acr) < assurance.rank(sso.acr):
            acr = sso.acr
        sso.amr, sso.acr, sso.auth_time = merged, acr, clock.now()
        audit.record("mfa.stepup", user_id=user.id, acr=acr,
                     factor=factor.kind if factor else None)
        return sso
    if not lockout.register_success(user):
        return None  # locked meanwhile by failures elsewhere
    sso = sessions.start(user, acr=acr, amr=amr)
    audit.record("login.success", user_id=user.id, amr=amr, acr=acr)
    alerts.check_sign_in(user, sso)  # new device / network, simultaneous sessions
    return sso
