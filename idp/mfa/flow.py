"""The second step of a sign-in, and step-up: which factors a user may use, the pending login
attempt, and finishing it into an SSO session with the right acr and amr.

Why an attempt waits for a factor is its purpose, looked up in a registry of purposes: a
purpose says whether the attempt belongs to a signed-in browser, which factors may serve it,
what the challenge page shows for it, and what completing it does. "login", "stepup" and
"enroll" are built in; a feature adds its own at install time (EPCS: idp.epcs.purpose), so
this module knows no feature.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, current_app, session
from sqlalchemy import and_, select, update

from idp import clock
from idp.accounts import acknowledgment, lockout
from idp.accounts.models import Acknowledgment, User
from idp.audit import service as audit
from idp.context import policy
from idp.core import session_memo
from idp.extensions import db
from idp.mfa.factors.registry import registry
from idp.mfa.models import Factor, LoginAttempt
from idp.security import alerts
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession

COOKIE_KEY = "mfa_attempt"
PURPOSES = "idp.mfa.purposes"


@dataclass(frozen=True)
class Verified:
    """What a completed attempt proved: the factor kind used (None: no factor), the factor
    row when it has one, and the amr and acr that result."""

    kind: str | None
    factor: Factor | None
    amr: list[str]
    acr: str


@dataclass(frozen=True)
class Purpose:
    """Why a login attempt waits for a second factor."""

    name: str
    complete: Callable[[LoginAttempt, User, Verified], SsoSession | None]
    signed_in: bool = False      # the attempt belongs to this browser's SSO session
    password_first: bool = False  # the password was checked when the attempt began
    # Which of the user's factors may serve (None: those reaching the attempt's target_acr).
    choose: Callable[[list[Factor]], list[Factor]] | None = None
    # A template the challenge page includes above the form, with its context.
    notice_template: str | None = None
    notice: Callable[[LoginAttempt], dict[str, Any]] | None = None
    # Completing it requires the account not locked, checked in the completing statement.
    unlocked_only: bool = False


def register_purpose(app: Flask, purpose: Purpose) -> None:
    _purposes(app)[purpose.name] = purpose


def _purposes(app: Flask) -> dict[str, Purpose]:
    return app.extensions.setdefault(PURPOSES, {p.name: p for p in BUILTIN_PURPOSES})


def purpose_of(attempt: LoginAttempt) -> Purpose | None:
    return _purposes(current_app).get(attempt.purpose)


def factors(user: User, *, min_acr: str | None = None) -> list[Factor]:
    """Confirmed factors of enabled kinds the user's role allows, in policy order (mfa.toml
    `order`: strongest first)."""
    mfa = policy().mfa
    allowed = set(mfa.allowed(user.role))
    rows = session_memo.remembered(db.session, ("factors", user.id), lambda: list(
        db.session.execute(select(Factor).where(
            Factor.user_id == user.id, Factor.confirmed_at.is_not(None))).scalars().all()))
    kinds = registry()
    usable = [f for f in rows if f.kind in allowed and kinds.get(f.kind) is not None]
    if min_acr is not None:
        rank = policy().assurance.rank
        usable = [f for f in usable if rank(mfa.factors[f.kind].acr) >= rank(min_acr)]
    return sorted(usable, key=lambda f: (kinds.rank(f.kind), f.id))


def usable(attempt: LoginAttempt, user: User) -> list[Factor]:
    """The factors that may finish this attempt, as its purpose decides."""
    purpose = purpose_of(attempt)
    if purpose is not None and purpose.choose is not None:
        return purpose.choose(factors(user))
    return factors(user, min_acr=attempt.target_acr)


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
    password_first = _purposes(current_app)[purpose].password_first
    attempt = LoginAttempt(
        id=secrets.token_urlsafe(24), user_id=user.id, purpose=purpose,
        amr=["pwd"] if password_first else [], target_acr=target_acr, created_at=now,
        expires_at=now + timedelta(seconds=policy().mfa.login_attempt_lifetime))
    db.session.add(attempt)
    session[COOKIE_KEY] = {"id": attempt.id, "next": next_url}
    return attempt


def current() -> tuple[LoginAttempt, User, str] | None:
    """The live attempt this browser holds, its user and where to go after it."""
    held = session.get(COOKIE_KEY)
    if not isinstance(held, dict) or not isinstance(held.get("id"), str):
        return None
    # One read: the attempt, its user and the user's confirmed factors (the challenge page and
    # its POST ask for the factors next; remembered for this transaction like factors() does).
    # Today's acknowledgment too (at most one row): the gate /authorize checks once the
    # sign-in is done (idp.accounts.acknowledgment.seen).
    rows = db.session.execute(
        select(LoginAttempt, User, Factor, Acknowledgment)
        .join(User, User.id == LoginAttempt.user_id)
        .outerjoin(Factor, and_(Factor.user_id == User.id, Factor.confirmed_at.is_not(None)))
        .outerjoin(Acknowledgment, acknowledgment.accepted_clause(User.id))
        .where(LoginAttempt.id == held["id"])).all()
    if not rows:
        return None
    attempt, user = rows[0][0], rows[0][1]
    if attempt.completed_at is not None or attempt.expires_at <= clock.now():
        return None
    found = [row[2] for row in rows if row[2] is not None]
    session_memo.remembered(db.session, ("factors", user.id), lambda: found)
    acknowledgment.seen(user, rows[0][3])
    purpose = purpose_of(attempt)
    if user is None or user.disabled or purpose is None:
        return None
    if purpose.signed_in:
        sso = sessions.current()
        if sso is None or sso.user_id != user.id:
            return None
    return attempt, user, str(held.get("next") or "/account")


def abandon() -> None:
    session.pop(COOKIE_KEY, None)


def finish(attempt: LoginAttempt, user: User, factor: Factor | None, *,
           kind: str | None = None) -> SsoSession | None:
    """Complete the attempt with `factor`, or a factor kind without a row (`kind`: recovery
    codes); neither: MFA not required and none enrolled."""
    purpose = purpose_of(attempt)
    if purpose is None:
        return None
    mfa = policy().mfa
    assurance = policy().assurance
    now = clock.now()
    conditions = [LoginAttempt.id == attempt.id, LoginAttempt.completed_at.is_(None)]
    if purpose.unlocked_only:
        conditions.append(lockout.not_locked(LoginAttempt.user_id, now))
    done = db.session.execute(
        update(LoginAttempt).where(*conditions)
        .values(completed_at=now).execution_options(synchronize_session=False)).rowcount
    if not done:
        return None  # finished already (a double submit), or locked meanwhile (unlocked_only)
    used = kind or (factor.kind if factor is not None else None)
    amr = list(attempt.amr or [])
    acr = assurance.password_acr
    if used is not None:
        spec = mfa.factors[used]
        amr += [a for a in spec.amr if a not in amr]
        acr = spec.acr
        if "pwd" in amr and "mfa" not in amr:
            amr.append("mfa")
    kind_of = registry().get(factor.kind) if factor is not None else None
    if factor is not None and not (kind_of is not None and kind_of.stamps_last_used):
        factor.last_used_at = clock.now()
    abandon()
    return purpose.complete(attempt, user, Verified(used, factor, amr, acr))


def _complete_login(attempt: LoginAttempt, user: User, verified: Verified
                    ) -> SsoSession | None:
    # Not locked: finish() completed the attempt only if so (unlocked_only). The count is
    # reset when the account as read shows one; a failure counted since that read stays.
    if lockout.owes_reset(user) and not lockout.register_success(user):
        return None  # locked meanwhile by failures elsewhere
    sso = sessions.start(user, acr=verified.acr, amr=verified.amr)
    audit.record("login.success", user_id=user.id, amr=verified.amr, acr=verified.acr)
    alerts.check_sign_in(user, sso)  # new device / network, simultaneous sessions
    return sso


def _complete_stepup(attempt: LoginAttempt, user: User, verified: Verified
                     ) -> SsoSession | None:
    sso = sessions.current()
    if sso is None:
        return None
    assurance = policy().assurance
    acr = verified.acr
    merged = list(sso.amr or []) + [a for a in verified.amr if a not in (sso.amr or [])]
    if assurance.rank(acr) < assurance.rank(sso.acr):
        acr = sso.acr
    sso.amr, sso.acr, sso.auth_time = merged, acr, clock.now()
    audit.record("mfa.stepup", user_id=user.id, acr=acr, factor=verified.kind)
    return sso


def _not_completed(attempt: LoginAttempt, user: User, verified: Verified) -> None:
    """Enrollment attempts only carry the codes sent while adding a factor."""
    return None


BUILTIN_PURPOSES = (
    Purpose("login", _complete_login, password_first=True, unlocked_only=True),
    Purpose("stepup", _complete_stepup, signed_in=True),
    Purpose("enroll", _not_completed),
)
