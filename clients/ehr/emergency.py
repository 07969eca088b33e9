"""Patient charts and break-glass emergency access, the EHR's side.

A clinician opens the chart of a patient on their care team (their schedule). Any other chart
is refused, with a "Break the glass" button: the EHR asks the IdP for the `emergency_access`
scope; the IdP makes the clinician sign in again, pick a reason and justify it, and answers
with an access token carrying `purpose_of_use` and `emergency: {exp, reason, episode}`. While
`emergency.exp` lies ahead, the EHR opens charts outside the care team, with a banner; after
it, it refuses them again, and the clinician stays signed in."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, url_for

from clients import rp
from clients.ehr import data
from clients.ehr.api import verifier
from clients.ehr.scopes import scope_string
from clients.ehr.tokens import KeysUnavailable, TokenError
from clients.i18n import N_, UNREACHABLE_CHECK

bp = Blueprint("charts", __name__)
SCOPE = "emergency_access"
BASE_ACR = "urn:healthidp:acr:aal2"


def now() -> float:
    """The EHR's clock for the entitlement's expiry (tests move it)."""
    return time.time()


def emergency_until(claims: dict[str, Any] | None) -> int | None:
    """When the token's emergency entitlement ends, while it runs; None otherwise."""
    entitlement = (claims or {}).get("emergency")
    if not isinstance(entitlement, dict):
        return None
    ends = entitlement.get("exp")
    if not isinstance(ends, int) or isinstance(ends, bool) or ends <= now():
        return None
    purposes = (claims or {}).get("purpose_of_use")
    if not isinstance(purposes, list) or "BTG" not in purposes:
        return None
    return ends


def _claims() -> dict[str, Any] | None:
    token = rp.access_token()
    if token is None:
        return None
    try:
        return verifier().verify(token)
    except TokenError:
        return None


@bp.get("/patients/<mrn>")
def chart(mrn: str) -> Response | str | tuple[str, int]:
    user = rp.current_user()
    if user is None:
        return redirect(url_for("rp.login"))
    patient = next((p for p in data.patients() if p["mrn"] == mrn[:32]), None)
    if patient is None:
        abort(404)
    try:
        claims = _claims()
    except KeysUnavailable:
        return render_template("error.html", message=UNREACHABLE_CHECK()), 503
    if claims is None:
        return redirect(url_for("rp.login"))
    on_team = mrn in data.care_team(user.get("username"))
    until = None if on_team else emergency_until(claims)
    if not on_team and until is None:
        ended = isinstance(claims.get("emergency"), dict)
        return render_template("chart.html", patient=patient, allowed=False, ended=ended,
                               user=user), 403
    labs = [lab for lab in data.labs() if lab["mrn"] == mrn]
    return render_template("chart.html", patient=patient, allowed=True, labs=labs, user=user,
                           emergency=datetime.fromtimestamp(until, UTC).strftime("%H:%M UTC")
                           if until else None)


@bp.post("/patients/<mrn>/break-glass")
def break_glass(mrn: str) -> Response | tuple[str, int]:
    if rp.current_user() is None:
        return redirect(url_for("rp.login"))
    if not any(p["mrn"] == mrn[:32] for p in data.patients()):
        abort(404)
    scope = scope_string(*rp.rp_settings().scope.split(), SCOPE)
    return rp.step_up(BASE_ACR, url_for("charts.chart", mrn=mrn), scope=scope,
                      title=N_("Emergency access was not granted"))
