"""The EPCS signing ceremony's step on the MFA pages: an MFA purpose ("epcs") registered at
install time, so idp.mfa.flow runs the ceremony's second factor without knowing EPCS.

The attempt belongs to the signed-in browser; only the hardware factors of policies/epcs.toml
may serve it; the challenge page names the prescription being signed; completing it records
the ceremony's outcome (idp.epcs.service.complete) and leaves the SSO session as it was."""

from __future__ import annotations

from typing import Any

from flask import Flask

from idp.accounts.models import User
from idp.context import policy
from idp.epcs import service
from idp.mfa import flow
from idp.mfa.models import Factor, LoginAttempt
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession

NAME = "epcs"


def _hardware(factors: list[Factor]) -> list[Factor]:
    """The ceremony's factor (the password was entered just before, on the ceremony page):
    of the hardware kinds, and a WebAuthn credential only when enrolled as an EPCS key
    (idp.epcs.keys: attested, listed model, device-bound, roaming)."""
    return service.hardware_only(factors)


def _complete(attempt: LoginAttempt, user: User, verified: flow.Verified) -> SsoSession | None:
    service.complete(attempt, user, verified.kind, verified.amr, verified.factor)
    return sessions.current()  # the result stays on the ceremony row, off the session


def _notice(attempt: LoginAttempt) -> dict[str, Any]:
    return {"ceremony": service.ceremony_for_attempt(attempt.id),
            "statement": policy().epcs.statement}


PURPOSE = flow.Purpose(NAME, _complete, signed_in=True, choose=_hardware,
                       notice_template="epcs/_challenge_notice.html", notice=_notice)


def install(app: Flask) -> None:
    flow.register_purpose(app, PURPOSE)
