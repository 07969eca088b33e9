"""Signing a controlled-substance prescription (DEA 21 CFR 1311): a fresh EPCS ceremony at the
IdP for every signature.

"Sign" sends the browser to the IdP with acr_values=EPCS, max_age=0 and the prescription
reference as binding_message (the IdP shows it at the ceremony and audits it). The callback
leaves the new ID token's claims in the session; /complete signs only if they show the EPCS
acr, the hardware factor (amr hwk) with a second category (pwd), an auth_time after the
signing started and within EPCS_CEREMONY_MAX_AGE, and the EPCS permission (entitlements). The
result is used once: the next signature needs a new ceremony.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, redirect, render_template, session, url_for

from clients import rp
from clients.ehr import data
from clients.ehr.api import verifier
from clients.ehr.prescriptions import Decision
from clients.ehr.scopes import (
    EPCS_CEREMONY_MAX_AGE,
    EPCS_CLOCK_SKEW,
    EPCS_ENTITLEMENT,
    EPCS_HARDWARE_AMR,
    EPCS_OTHER_AMR,
    PRESCRIBER_ROLES,
    SIGN_CONTROLLED_ACR,
)
from clients.ehr.tokens import KeysUnavailable, TokenError, token_roles

bp = Blueprint("controlled", __name__, url_prefix="/prescriptions/controlled")

NO_PERMISSION = ("your account does not hold the EPCS permission for controlled substances "
                 "(two administrators must grant it at the identity provider)")


def _strings(value: object) -> set[str]:
    return {v for v in value if isinstance(v, str)} if isinstance(value, list) else set()


def may_start(claims: dict[str, Any] | None) -> Decision:
    """Before the ceremony, from the session's access token: a prescriber holding the EPCS
    permission? (The IdP checks both again, and /complete checks the ceremony's ID token.)"""
    if claims is None:
        return Decision(False, step_up=True, reason="your sign-in has to be renewed")
    if not PRESCRIBER_ROLES & token_roles(claims):
        return Decision(False, reason="only physicians and nurse practitioners sign "
                        "prescriptions")
    if EPCS_ENTITLEMENT not in _strings(claims.get("entitlements")):
        return Decision(False, reason=NO_PERMISSION)
    return Decision(True)


def ceremony_decision(result: dict[str, Any] | None, reference: str, now: float) -> Decision:
    """Do the claims of the ID token the ceremony returned allow signing `reference` now?"""
    if not isinstance(result, dict) or not isinstance(result.get("claims"), dict):
        return Decision(False, reason="no signing ceremony was completed")
    carry = result.get("carry") or {}
    claims = result["claims"]
    if carry.get("reference") != reference:
        return Decision(False, reason="the ceremony was for another prescription")
    if claims.get("acr") != SIGN_CONTROLLED_ACR:
        return Decision(False, reason="the sign-in was not an EPCS signing ceremony")
    amr = _strings(claims.get("amr"))
    if EPCS_HARDWARE_AMR not in amr or not amr & EPCS_OTHER_AMR:
        return Decision(False, reason="the ceremony did not use a security key or biometrics "
                        "together with your password")
    auth_time, started = claims.get("auth_time"), carry.get("started_at")
    if not isinstance(auth_time, int) or not isinstance(started, int | float) or \
            auth_time < started - EPCS_CLOCK_SKEW or auth_time > now + EPCS_CLOCK_SKEW or \
            now - auth_time > EPCS_CEREMONY_MAX_AGE:
        return Decision(False, reason="the ceremony is not fresh: sign again")
    if EPCS_ENTITLEMENT not in _strings(claims.get("entitlements")):
        return Decision(False, reason=NO_PERMISSION)
    if not PRESCRIBER_ROLES & _strings(claims.get("roles")):
        return Decision(False, reason="only physicians and nurse practitioners sign "
                        "prescriptions")
    return Decision(True)


def _claims() -> dict[str, Any] | None:
    token = rp.access_token()
    if token is None:
        return None
    try:
        return verifier().verify(token)
    except TokenError:
        return None


def _unavailable() -> tuple[str, int]:
    return render_template("error.html", message="The identity provider cannot be reached to "
                           "check your access. Try again in a moment."), 503


def _page(decision: Decision, signed: dict | None = None, status: int = 200
          ) -> tuple[str, int]:
    return render_template("controlled.html", draft=data.controlled_draft(), decision=decision,
                           signed=signed), status


@bp.get("/")
def sign() -> Response | tuple[str, int]:
    if rp.current_user() is None:
        return redirect(url_for("rp.login"))
    try:
        return _page(may_start(_claims()))
    except KeysUnavailable:
        return _unavailable()


@bp.post("/")
def sign_post() -> Response | tuple[str, int]:
    if rp.current_user() is None:
        return redirect(url_for("rp.login"))
    try:
        decision = may_start(_claims())
    except KeysUnavailable:
        return _unavailable()
    if decision.step_up:
        return redirect(url_for("rp.login"))
    if not decision.allowed:
        return _page(decision, status=403)
    reference = data.controlled_draft()["id"]
    return rp.step_up(SIGN_CONTROLLED_ACR, url_for("controlled.complete"),
                      extra={"max_age": "0", "binding_message": reference},
                      carry={"reference": reference, "started_at": int(time.time())},
                      title="Controlled-substance signing refused")


@bp.get("/complete")
def complete() -> Response | tuple[str, int]:
    user = rp.current_user()
    if user is None:
        return redirect(url_for("rp.login"))
    result = session.pop("step_up_result", None)  # one ceremony, one signature
    draft = data.controlled_draft()
    decision = ceremony_decision(result, draft["id"], time.time())
    if not decision.allowed:
        return _page(decision, status=403)
    claims = result["claims"]
    signed = {"by": user.get("name") or user.get("username"), "npi": user.get("npi"),
              "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "acr": claims["acr"],
              "amr": " ".join(claims.get("amr") or []),
              "auth_time": datetime.fromtimestamp(claims["auth_time"], UTC).strftime(
                  "%H:%M:%S UTC")}
    return _page(decision, signed)
