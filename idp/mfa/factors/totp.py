"""The authenticator-app factor: TOTP (RFC 6238) with pyotp, seeds encrypted at rest, +-1 step,
each step usable once. Enrolled on /mfa/enroll/totp (idp.mfa.enroll_views)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import pyotp
import segno
from flask import url_for
from sqlalchemy import or_, update

from idp import clock
from idp.accounts.models import User
from idp.context import policy
from idp.core import crypto
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db
from idp.mfa.factors.base import FactorType
from idp.mfa.factors.registry import builtin
from idp.mfa.models import Factor, LoginAttempt

ISSUER_NAME = "Provider Identity"
KIND = "totp"
FAILED = _l("That code is not right. Enter the newest code your authenticator app shows.")


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(user: User, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=ISSUER_NAME)


def qr_svg(uri: str) -> str:
    """The QR code as inline SVG: drawn here, no external service sees the seed."""
    return segno.make(uri, error="m").svg_inline(scale=5, dark="#1b2733")


def matching_step(secret: str, code: str) -> int | None:
    """The time step whose code matches, within the policy window, or None."""
    code = (code or "").strip().replace(" ", "")
    if not code.isascii() or not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    now = clock.now()
    current = totp.timecode(now)
    window = policy().mfa.totp_window
    found = None
    for step in range(current - window, current + window + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def verify(factor: Factor, code: str) -> bool:
    """Check a code and consume its time step atomically (a replay in the same step fails)."""
    if not factor.secret_encrypted:
        return False
    step = matching_step(crypto.decrypt(factor.secret_encrypted), code)
    if step is None:
        return False
    claimed = db.session.execute(
        update(Factor).where(Factor.id == factor.id, or_(
            Factor.last_totp_step.is_(None), Factor.last_totp_step < step))
        .values(last_totp_step=step, last_used_at=clock.now())
        .execution_options(synchronize_session=False)).rowcount
    return bool(claimed)


@builtin
class TotpFactor(FactorType):
    kind = KIND
    stamps_last_used = True
    icon = "app"
    failed_message = FAILED

    def enroll_url(self, next_url: str | None) -> str | None:
        return url_for("mfa.enroll_totp", next=next_url)

    def enroll(self, user: User, **details: Any) -> Factor:
        """details: secret_encrypted (the seed the user scanned), step (the time step its
        confirming code matched), label."""
        now = clock.now()
        label = (details.get("label") or policy().mfa.factors[KIND].label).strip()[:100]
        return Factor(user_id=user.id, kind=KIND, label=label, created_at=now, confirmed_at=now,
                      secret_encrypted=details["secret_encrypted"],
                      last_totp_step=details["step"])

    def prompt(self, factor: Factor) -> str:
        return _("Code from your authenticator app")

    def verify(self, attempt: LoginAttempt, user: User, factor: Factor | None,
               response: Mapping[str, str]) -> bool:
        return factor is not None and verify(factor, response.get("code", "")[:64])
