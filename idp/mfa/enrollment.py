"""Adding a factor: who may enroll now, the short-lived attempt codes are bound to while
enrolling from the settings, and saving a confirmed factor (audit, recovery codes, notice,
and finishing a sign-in that was waiting for its first factor)."""

from __future__ import annotations

import secrets
from datetime import timedelta

from flask import Response, redirect, request, session, url_for

from idp import clock
from idp.accounts import notices
from idp.accounts.models import User
from idp.accounts.views import safe_next
from idp.audit import service as audit
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.extensions import db
from idp.mfa import flow
from idp.mfa.factors import recovery
from idp.mfa.models import Factor, LoginAttempt
from idp.sessions import service as sessions

ATTEMPT_KEY = "enroll_attempt"
CODES_KEY = "recovery_codes_once"


def enrolling() -> tuple[User, str] | None:
    """Who is enrolling: a sign-in waiting for its first factor, or a signed-in user whose
    authentication is recent (factor changes need a sign-in within the re-auth window)."""
    found = flow.current()
    if found is not None and found[0].purpose == "login":
        # Only a user with no factor yet may enroll between password and second factor;
        # anyone else must pass their existing factor first (else the password alone would
        # be enough to register an attacker's authenticator).
        if flow.needs_enrollment(found[1]):
            return found[1], found[2]
        return None
    sso = sessions.current()
    if sso is None:
        return None
    age = (clock.now() - sso.auth_time).total_seconds()
    if age > policy().mfa.reauth_window:
        return None
    return sso.user, safe_next(request.args.get("next"))


def reauth() -> Response:
    return redirect(url_for("accounts.login", next=request.full_path, reauth=1))


def attempt_for(user: User) -> LoginAttempt:
    """Codes are bound to an attempt; enrollment from settings uses a short-lived one
    (policies/mfa.toml enrollment_lifetime)."""
    found = flow.current()
    if found is not None:
        return found[0]
    held = session.get(ATTEMPT_KEY)
    attempt = db.session.get(LoginAttempt, held) if isinstance(held, str) else None
    if attempt is None or attempt.user_id != user.id or attempt.expires_at <= clock.now():
        now = clock.now()
        attempt = LoginAttempt(
            id=secrets.token_urlsafe(24), user_id=user.id, purpose="enroll", amr=[],
            created_at=now, expires_at=now + timedelta(seconds=policy().mfa.enrollment_lifetime))
        db.session.add(attempt)
        session[ATTEMPT_KEY] = attempt.id
    return attempt


def save(user: User, factor: Factor) -> list[str] | None:
    """Keep a confirmed factor (audited); new recovery codes when the user has none left."""
    db.session.add(factor)
    db.session.flush()
    audit.record("mfa.enrolled", user_id=user.id, factor=factor.kind, label=factor.label)
    return recovery.generate(user) if recovery.remaining(user) == 0 else None


def enrolled(user: User, factor: Factor) -> Response:
    """Save a confirmed factor, tell the user, then show recovery codes if they had none."""
    codes_shown = save(user, factor)
    found = flow.current()
    if found is not None and found[0].purpose == "login":
        flow.finish(found[0], user, factor)
        next_url = found[2]
    else:
        next_url = safe_next(request.args.get("next"))
    db.session.commit()
    notices.factor_changed(user, _("%(label)s was added as a way to verify your sign-in",
                                    label=factor.label))
    if codes_shown:
        session[CODES_KEY] = codes_shown
        return redirect(url_for("mfa.show_recovery_codes", next=next_url))
    return redirect(next_url)
