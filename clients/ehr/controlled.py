"""Signing controlled-substance prescriptions (DEA 21 CFR 1311): a fresh EPCS ceremony at the
IdP for every signature, several prescriptions at once.

"Sign" pushes the request to the IdP's PAR endpoint with the EHR's client authentication
(RFC 9126): acr_values=EPCS, max_age=0, the prescription ids as binding_message and the
prescriptions themselves as RFC 9396 authorization_details (type epcs_prescription), which
the IdP shows at the ceremony with the DEA statement. The callback leaves the new ID token's
claims in the session; /complete signs only if they show the EPCS acr, the hardware factor
(amr hwk) with a second category (pwd), an auth_time after the signing started and within
EPCS_CEREMONY_MAX_AGE, and the EPCS permission (entitlements), and if the new access token
carries exactly what was sent (its epcs_signature.sha256). The result is used once.

"Transmit to the pharmacy" recomputes the SHA-256 (RFC 8785 JSON) of the prescriptions as they
stand now and refuses when it differs from the signed one in the access token: a prescription
changed after signing is never sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, session, url_for

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
from clients.i18n import N_, UNREACHABLE_CHECK
from clients.i18n import gettext as _

log = logging.getLogger(__name__)
bp = Blueprint("controlled", __name__, url_prefix="/prescriptions/controlled")

def no_permission() -> str:
    return _("your account does not hold the EPCS permission for controlled substances (two "
             "administrators must grant it at the identity provider)")


def _strings(value: object) -> set[str]:
    return {v for v in value if isinstance(v, str)} if isinstance(value, list) else set()


def may_start(claims: dict[str, Any] | None) -> Decision:
    """Before the ceremony, from the session's access token: a prescriber holding the EPCS
    permission? (The IdP checks both again, and /complete checks the ceremony's ID token.)"""
    if claims is None:
        return Decision(False, step_up=True, reason=_("your sign-in has to be renewed"))
    if not PRESCRIBER_ROLES & token_roles(claims):
        return Decision(False, reason=_("only physicians and nurse practitioners sign "
                        "prescriptions"))
    if EPCS_ENTITLEMENT not in _strings(claims.get("entitlements")):
        return Decision(False, reason=no_permission())
    return Decision(True)


def ceremony_decision(result: dict[str, Any] | None, reference: str, now: float) -> Decision:
    """Do the claims of the ID token the ceremony returned allow signing `reference` now?"""
    if not isinstance(result, dict) or not isinstance(result.get("claims"), dict):
        return Decision(False, reason=_("no signing ceremony was completed"))
    carry = result.get("carry") or {}
    claims = result["claims"]
    if carry.get("reference") != reference:
        return Decision(False, reason=_("the ceremony was for another prescription"))
    if claims.get("acr") != SIGN_CONTROLLED_ACR:
        return Decision(False, reason=_("the sign-in was not an EPCS signing ceremony"))
    amr = _strings(claims.get("amr"))
    if EPCS_HARDWARE_AMR not in amr or not amr & EPCS_OTHER_AMR:
        return Decision(False, reason=_("the ceremony did not use a security key or biometrics "
                        "together with your password"))
    auth_time, started = claims.get("auth_time"), carry.get("started_at")
    if not isinstance(auth_time, int) or not isinstance(started, int | float) or \
            auth_time < started - EPCS_CLOCK_SKEW or auth_time > now + EPCS_CLOCK_SKEW or \
            now - auth_time > EPCS_CEREMONY_MAX_AGE:
        return Decision(False, reason=_("the ceremony is not fresh: sign again"))
    if EPCS_ENTITLEMENT not in _strings(claims.get("entitlements")):
        return Decision(False, reason=no_permission())
    if not PRESCRIBER_ROLES & _strings(claims.get("roles")):
        return Decision(False, reason=_("only physicians and nurse practitioners sign "
                        "prescriptions"))
    return Decision(True)


# -- the prescriptions as signed -----------------------------------------------------------
EDITS = "controlled_edits"  # the session's changes to the drafts (quantity), by id
SENT = "controlled_sent"  # the hash of the last signature transmitted
MAX_QUANTITY = 100


def drafts() -> list[dict[str, Any]]:
    """The controlled drafts as they stand now (with this session's edits)."""
    edits = session.get(EDITS) or {}
    return [{**d, **(edits.get(d["id"]) or {})} for d in data.controlled_drafts()]


def authorization_details(rows: list[dict[str, Any]], user: dict[str, Any]
                          ) -> list[dict[str, Any]] | None:
    """The prescriptions as RFC 9396 authorization_details (the IdP's epcs_prescription
    schema); None when the prescriber's DEA registration is unknown here."""
    registration = data.prescriber(user.get("npi"))
    if registration is None:
        return None
    return [{"type": "epcs_prescription", "prescription_id": row["id"],
             "patient": {"name": row["patient"], "address": row["address"]},
             "drug": {"name": row["drug"], "strength": row["strength"],
                      "dosage_form": row["dosage_form"], "quantity": row["quantity"],
                      "directions": row["directions"], "refills": row["refills"]},
             "prescriber": {"name": user.get("name") or user.get("username") or "",
                            "address": registration["address"],
                            "dea_number": registration["dea_number"]}} for row in rows]


def details_sha256(details: list[dict[str, Any]]) -> str:
    """SHA-256 (hex) of the RFC 8785 form: for these strings and integers with ASCII member
    names, sorted members, no whitespace, UTF-8 (the IdP's idp.epcs.details does the same)."""
    text = json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def signed_hash(claims: dict[str, Any] | None) -> str | None:
    """The hash of what the access token says was signed, when it is consistent: the token's
    epcs_signature.sha256 and its authorization_details hashed again agree."""
    if not isinstance(claims, dict):
        return None
    signature, signed = claims.get("epcs_signature"), claims.get("authorization_details")
    if not isinstance(signature, dict) or not isinstance(signed, list):
        return None
    claimed = signature.get("sha256")
    return claimed if isinstance(claimed, str) and claimed == details_sha256(signed) else None


def _claims() -> dict[str, Any] | None:
    token = rp.access_token()
    if token is None:
        return None
    try:
        return verifier().verify(token)
    except TokenError:
        return None


def _unavailable() -> tuple[str, int]:
    return render_template("error.html", message=UNREACHABLE_CHECK()), 503


def _pending(claims: dict[str, Any] | None) -> bool:
    """Does the session's access token carry a signature not transmitted yet?"""
    found = signed_hash(claims)
    return found is not None and session.get(SENT) != found


def _page(decision: Decision, signed: dict | None = None, status: int = 200,
          transmitted: bool = False, pending: bool = False) -> tuple[str, int]:
    return render_template("controlled.html", drafts=drafts(), decision=decision,
                           signed=signed, transmitted=transmitted, pending=pending,
                           reference=" ".join(d["id"] for d in drafts())), status


@bp.get("/")
def sign() -> Response | tuple[str, int]:
    if rp.current_user() is None:
        return redirect(url_for("rp.login"))
    try:
        claims = _claims()
        return _page(may_start(claims), pending=_pending(claims))
    except KeysUnavailable:
        return _unavailable()


@bp.post("/")
def sign_post() -> Response | tuple[str, int]:
    user = rp.current_user()
    if user is None:
        return redirect(url_for("rp.login"))
    try:
        decision = may_start(_claims())
    except KeysUnavailable:
        return _unavailable()
    if decision.step_up:
        return redirect(url_for("rp.login"))
    if not decision.allowed:
        return _page(decision, status=403)
    details = authorization_details(drafts(), user)
    if details is None:
        return _page(Decision(False, reason=_("this EHR has no DEA registration on file for "
                              "you")), status=403)
    reference = " ".join(d["prescription_id"] for d in details)
    return rp.step_up(SIGN_CONTROLLED_ACR, url_for("controlled.complete"),
                      extra={"max_age": "0", "binding_message": reference,
                             "authorization_details": json.dumps(details)},
                      carry={"reference": reference, "started_at": int(time.time()),
                             "sha256": details_sha256(details),
                             "edits": session.get(EDITS) or {}},
                      title=N_("Controlled-substance signing refused"), pushed=True)


@bp.get("/complete")
def complete() -> Response | tuple[str, int]:
    user = rp.current_user()
    if user is None:
        return redirect(url_for("rp.login"))
    result = session.pop("step_up_result", None)  # one ceremony, one signature
    carry = (result or {}).get("carry") or {}
    session[EDITS] = carry.get("edits") or {}  # the drafts as they were sent to be signed
    reference = " ".join(d["id"] for d in drafts())
    decision = ceremony_decision(result, reference, time.time())
    if not decision.allowed:
        return _page(decision, status=403)
    try:
        token_hash = signed_hash(_claims())
    except KeysUnavailable:
        return _unavailable()
    if token_hash is None or token_hash != carry.get("sha256"):
        return _page(Decision(False, reason=_("the identity provider did not sign the "
                              "prescriptions this EHR sent")), status=403)
    claims = result["claims"]
    signed = {"by": user.get("name") or user.get("username"), "npi": user.get("npi"),
              "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "acr": claims["acr"],
              "amr": " ".join(claims.get("amr") or []), "sha256": token_hash,
              "auth_time": datetime.fromtimestamp(claims["auth_time"], UTC).strftime(
                  "%H:%M:%S UTC")}
    return _page(decision, signed)


@bp.post("/edit")
def edit() -> Response | tuple[str, int]:
    """Change a draft's quantity (before signing, or after: then the signature no longer
    matches and the EHR will not transmit)."""
    if rp.current_user() is None:
        return redirect(url_for("rp.login"))
    rx_id, quantity = request.form.get("prescription_id", ""), request.form.get("quantity", "")
    quantity = quantity.strip()
    known = {d["id"] for d in data.CONTROLLED_DRAFTS}
    if rx_id not in known or not 0 < len(quantity) <= MAX_QUANTITY:
        return _page(Decision(False, reason=_(
            "enter a quantity (at most %(count)s characters)", count=MAX_QUANTITY)), status=400)
    edits = dict(session.get(EDITS) or {})
    edits[rx_id] = {"quantity": quantity}
    session[EDITS] = edits
    return redirect(url_for("controlled.sign"))


@bp.post("/transmit")
def transmit() -> Response | tuple[str, int]:
    """To the pharmacy only what was signed: the prescriptions as they stand now must hash to
    the access token's epcs_signature.sha256."""
    user = rp.current_user()
    if user is None:
        return redirect(url_for("rp.login"))
    try:
        token_hash = signed_hash(_claims())
    except KeysUnavailable:
        return _unavailable()
    details = authorization_details(drafts(), user)
    if token_hash is None or session.get(SENT) == token_hash:
        return _page(Decision(False, reason=_("no signature waiting to be transmitted: sign "
                              "the prescriptions first")), status=409)
    if details is None or details_sha256(details) != token_hash:
        log.warning("controlled-substance transmission refused: changed after signing")
        return _page(Decision(False, reason=_("the prescriptions changed after they were "
                              "signed; nothing was transmitted to the pharmacy. Sign them "
                              "again")), status=409)
    log.info("controlled-substance prescriptions %s transmitted (sha256 %s)",
             " ".join(d["prescription_id"] for d in details), token_hash)
    session[SENT] = token_hash  # one signature, one transmission
    return _page(Decision(True), transmitted=True)

