"""A sensitive action: signing a (fictitious) prescription.

It needs an access token whose `acr` is at least aal2-phr (a phishing-resistant factor), the
`ehr.prescriptions.write` scope and a prescriber's role. A token that falls short on assurance
or scope sends the user through step-up: back to the IdP with acr_values=aal2-phr; the IdP asks
for the user's security key or biometrics, or answers `unmet_authentication_requirements` when
the account has none (the callback then explains that in plain words).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, redirect, render_template, url_for

from clients import rp
from clients.ehr import data
from clients.ehr.api import verifier
from clients.ehr.scopes import (
    PRESCRIBER_ROLES,
    PRESCRIPTIONS_WRITE,
    SIGN_PRESCRIPTION_ACR,
    acr_at_least,
    scope_string,
)
from clients.ehr.tokens import KeysUnavailable, TokenError, token_roles, token_scopes
from clients.i18n import UNREACHABLE_CHECK
from clients.i18n import gettext as _

bp = Blueprint("prescriptions", __name__, url_prefix="/prescriptions")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    step_up: bool = False
    reason: str | None = None


def signing_decision(claims: dict[str, Any] | None) -> Decision:
    """May the holder of these (validated) access-token claims sign a prescription now?
    None: no usable token (expired, refused): sign in again, at the required level."""
    if claims is None:
        return Decision(False, step_up=True, reason=_("your sign-in has to be renewed"))
    if not PRESCRIBER_ROLES & token_roles(claims):
        return Decision(False, reason=_("only physicians and nurse practitioners sign "
                        "prescriptions"))
    if not acr_at_least(claims.get("acr"), SIGN_PRESCRIPTION_ACR):
        return Decision(False, step_up=True, reason=_("signing needs a sign-in with a security "
                        "key or biometrics"))
    if PRESCRIPTIONS_WRITE not in token_scopes(claims):
        return Decision(False, step_up=True, reason=_("signing needs the prescription-writing "
                        "permission"))
    return Decision(True)


def _claims() -> dict[str, Any] | None:
    """The validated claims of the session's access token; None when there is none usable.
    KeysUnavailable propagates (cannot tell now)."""
    token = rp.access_token()
    if token is None:
        return None
    try:
        return verifier().verify(token)
    except TokenError:
        return None


def _step_up() -> Response | tuple[str, int]:
    scope = scope_string(*rp.rp_settings().scope.split(), PRESCRIPTIONS_WRITE)
    return rp.step_up(SIGN_PRESCRIPTION_ACR, url_for("prescriptions.sign"), scope=scope)


def _unavailable() -> tuple[str, int]:
    return render_template("error.html", message=UNREACHABLE_CHECK()), 503


@bp.get("/sign")
def sign() -> Response | str | tuple[str, int]:
    user = rp.current_user()
    if user is None:
        return redirect(url_for("rp.login"))
    try:
        decision = signing_decision(_claims())
    except KeysUnavailable:
        return _unavailable()
    return render_template("prescription.html", draft=data.prescription_draft(),
                           decision=decision, signed=None)


@bp.post("/sign")
def sign_post() -> Response | str | tuple[str, int]:
    user = rp.current_user()
    if user is None:
        return redirect(url_for("rp.login"))
    try:
        claims = _claims()
    except KeysUnavailable:
        return _unavailable()
    decision = signing_decision(claims)
    if decision.step_up:
        return _step_up()
    if not decision.allowed:
        return render_template("prescription.html", draft=data.prescription_draft(),
                               decision=decision, signed=None), 403
    assert claims is not None
    signed = {"by": user.get("name") or user.get("username"), "npi": user.get("npi"),
              "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "acr": claims.get("acr")}
    return render_template("prescription.html", draft=data.prescription_draft(),
                           decision=decision, signed=signed)
