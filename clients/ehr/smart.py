"""The EHR as a SMART on FHIR server: its FHIR base (`/fhir`) publishes
`/.well-known/smart-configuration` (the IdP's authorization server metadata, relayed: the IdP
is the authorization server), serves Patient resources to SMART access tokens, and launches
registered SMART apps from the patient list (EHR launch).

EHR launch: the signed-in user presses "Launch app" for a patient; the EHR registers the
context with the IdP over the back channel (POST {issuer}/smart/launch, authenticated with the
EHR's own client credentials, naming the app, the patient and the user's `sub`), gets an opaque
single-use launch value, and sends the browser to the app's launch URL with `launch` and
`iss` (this FHIR base).

Access rules for FHIR reads (SMART scopes, v2 and v1 syntax): a `patient/` scope reads only the
patient named by the token's `patient` claim (the launch context); a `user/` scope reads what
the user's role may see (the `roles` claim must hold a staff role).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import requests
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
)

from clients import rp
from clients.ehr import data
from clients.ehr.scopes import STAFF_ROLES
from clients.ehr.tokens import KeysUnavailable, TokenError, token_roles, token_scopes

bp = Blueprint("smart", __name__)
FHIR = "/fhir"
CONFIG_MAX_AGE = 300  # seconds the relayed smart-configuration is cached
_SCOPE = re.compile(r"(patient|user|system)/(\*|[A-Z][A-Za-z]*)\.(c?r?u?d?s?|read|write|\*)"
                    r"(?:\?.*)?")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
GENDER = {"F": "female", "M": "male", "X": "other"}


def fhir_base() -> str:
    return rp.rp_settings().base_url + FHIR


def _http_get() -> Any:
    return current_app.extensions["ehr.verifier"]._get


def _http_post() -> Any:
    return current_app.extensions.get("ehr.http_post") or requests.post


# -- smart-configuration ---------------------------------------------------------------------
_config_lock = threading.Lock()


@bp.get(f"{FHIR}/.well-known/smart-configuration")
def smart_configuration() -> Response:
    cache = current_app.extensions.setdefault("ehr.smart_config", {})
    with _config_lock:
        if not cache or time.monotonic() - cache["at"] > CONFIG_MAX_AGE:
            issuer = rp.rp_settings().issuer
            try:
                answer = _http_get()(f"{issuer}/.well-known/smart-configuration", timeout=5)
                answer.raise_for_status()
                document = answer.json()
                if not isinstance(document, dict) or document.get("issuer") != issuer:
                    raise ValueError("another issuer")
            except (requests.RequestException, ValueError):
                response = jsonify(error="temporarily_unavailable")
                response.status_code = 503
                response.headers["Retry-After"] = "5"
                return response
            cache.update(document=document, at=time.monotonic())
        document = cache["document"]
    response = jsonify(document)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = f"public, max-age={CONFIG_MAX_AGE}"
    return response


@bp.get(f"{FHIR}/.well-known/udap")
def udap_metadata() -> Response:
    """UDAP server metadata (HL7 FAST Security IG §2) at the FHIR base: the IdP's document,
    relayed unchanged (its signed_metadata names this base when the IdP's udap.toml
    metadata_base says so); not cached here, the signed part carries its own iat and jti."""
    try:
        answer = _http_get()(f"{rp.rp_settings().issuer}/.well-known/udap", timeout=5)
        answer.raise_for_status()
        document = answer.json()
        if not isinstance(document, dict):
            raise ValueError("not a document")
    except (requests.RequestException, ValueError):
        response = jsonify(error="temporarily_unavailable")
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response
    response = jsonify(document)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


# -- FHIR reads ------------------------------------------------------------------------------
def _outcome(status: int, code: str, text: str) -> Response:
    response = jsonify(resourceType="OperationOutcome",
                       issue=[{"severity": "error", "code": code, "diagnostics": text}])
    response.status_code = status
    response.mimetype = "application/fhir+json"
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ehr", error="invalid_token"'
    return response


def grants(claims: dict[str, Any], resource: str, permission: str) -> list[str]:
    """The contexts (patient, user, system) in which the token's scopes allow `permission`
    (a letter of cruds) on `resource`."""
    found = []
    for scope in token_scopes(claims):
        match = _SCOPE.fullmatch(scope)
        if match is None:
            continue
        perms = _V1.get(match[3], match[3])
        if permission in perms and match[2] in ("*", resource):
            found.append(match[1])
    return found


def backend_token(claims: dict[str, Any]) -> bool:
    """A backend service's own token (client_credentials: the client is the subject, no
    user signed in), the only kind system/ scopes count on."""
    return bool(claims.get("client_id")) and claims.get("sub") == claims.get("client_id") \
        and "auth_time" not in claims


def unrestricted(claims: dict[str, Any], resource: str, permission: str) -> bool:
    """Any patient's records: a user/ scope with a staff role, or a system/ scope on a backend
    service's own token. Otherwise only a patient/ scope's own patient."""
    contexts = grants(claims, resource, permission)
    return bool("user" in contexts and STAFF_ROLES & token_roles(claims)) or \
        ("system" in contexts and backend_token(claims))


def _authorize_read(resource: str, permission: str, patient_id: str | None
                    ) -> Response | None:
    """None when the bearer token may do this; the FHIR error response otherwise."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return _outcome(401, "login", "a Bearer access token is required")
    try:
        claims = current_app.extensions["ehr.verifier"].verify(value.strip())
    except TokenError as exc:
        return _outcome(401, "login", str(exc))
    except KeysUnavailable:
        return _outcome(503, "transient", "cannot check tokens right now")
    g.token_claims = claims
    if unrestricted(claims, resource, permission):
        return None
    if "patient" in grants(claims, resource, permission) and \
            isinstance(claims.get("patient"), str) and \
            patient_id in (None, claims["patient"]):
        return None
    return _outcome(403, "forbidden", f"the token does not allow this {resource} access")


def patient_resource(row: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": row["mrn"],
            "identifier": [{"system": "urn:ehr:mrn", "value": row["mrn"]}],
            "name": [{"text": row["name"]}], "birthDate": row["birth_date"],
            "gender": GENDER.get(row["sex"], "unknown")}


def _fhir(body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.mimetype = "application/fhir+json"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get(f"{FHIR}/Patient/<patient_id>")
def read_patient(patient_id: str) -> Response:
    denied = _authorize_read("Patient", "r", patient_id)
    if denied:
        return denied
    row = next((p for p in data.patients() if p["mrn"] == patient_id), None)
    if row is None:
        return _outcome(404, "not-found", "no such patient")
    return _fhir(patient_resource(row))


@bp.get(f"{FHIR}/Patient")
def search_patients() -> Response:
    claims_patient = None
    denied = _authorize_read("Patient", "s", None)
    if denied:
        return denied
    if not unrestricted(g.token_claims, "Patient", "s"):
        claims_patient = g.token_claims.get("patient")  # patient/ scope: its compartment
    rows = [p for p in data.patients() if claims_patient in (None, p["mrn"])]
    return _fhir({"resourceType": "Bundle", "type": "searchset", "total": len(rows),
                  "entry": [{"fullUrl": f"{fhir_base()}/Patient/{p['mrn']}",
                             "resource": patient_resource(p)} for p in rows]})


NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"


def _practitioners() -> list[dict[str, Any]]:
    """The directory (a test may put its own in app.extensions["ehr.practitioners"])."""
    rows = current_app.extensions.get("ehr.practitioners")
    return list(rows) if rows is not None else data.practitioners()


def practitioner_resource(row: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": row["id"], "active": True,
            "identifier": [{"system": NPI_SYSTEM, "value": row["npi"]}],
            "name": [{"text": row["name"]}]}


@bp.get(f"{FHIR}/Practitioner/<practitioner_id>")
def read_practitioner(practitioner_id: str) -> Response:
    denied = _authorize_read("Practitioner", "r", None)
    if denied:
        return denied
    row = next((p for p in _practitioners() if p["id"] == practitioner_id), None)
    if row is None:
        return _outcome(404, "not-found", "no such practitioner")
    return _fhir(practitioner_resource(row))


@bp.get(f"{FHIR}/Practitioner")
def search_practitioners() -> Response:
    """Search by `identifier` (token: [system]|value, or value alone), or list all."""
    denied = _authorize_read("Practitioner", "s", None)
    if denied:
        return denied
    wanted = request.args.getlist("identifier")
    if len(wanted) > 1 or any(len(w) > 200 for w in wanted):
        return _outcome(400, "invalid", "one identifier parameter, up to 200 characters")
    rows = _practitioners()
    if wanted:
        system, bar, value = wanted[0].rpartition("|")
        rows = [p for p in rows if p["npi"] == value and (not bar or system in ("", NPI_SYSTEM))]
    return _fhir({"resourceType": "Bundle", "type": "searchset", "total": len(rows),
                  "entry": [{"fullUrl": f"{fhir_base()}/Practitioner/{p['id']}",
                             "resource": practitioner_resource(p),
                             "search": {"mode": "match"}} for p in rows]})


# -- EHR launch ------------------------------------------------------------------------------
class LaunchFailed(Exception):
    """The IdP did not register the launch; str() is safe to show."""


def register_launch(patient_id: str, sub: str | None) -> str:
    """Register the launch context with the IdP (back channel); the opaque launch value."""
    settings = rp.rp_settings()
    try:
        answer = _http_post()(
            f"{settings.issuer}/smart/launch", timeout=5,
            auth=(settings.client_id, settings.client_secret),
            data={"app_client_id": current_app.extensions["ehr.smart_app"]["client_id"],
                  "patient": patient_id, "sub": sub or ""})
        body = answer.json()
    except (requests.RequestException, ValueError):
        raise LaunchFailed("The identity provider cannot be reached. Try again in a moment."
                           ) from None
    if answer.status_code != 200 or not isinstance(body.get("launch"), str):
        raise LaunchFailed("The identity provider refused the launch: "
                           f"{body.get('error_description') or body.get('error') or '?'}")
    return body["launch"]


@bp.post("/patients/<patient_id>/launch")
def launch(patient_id: str) -> Response | tuple[str, int]:
    """"Launch app" on the patient list (a CSRF-protected form)."""
    user = rp.current_user()
    if user is None:
        return redirect("/")
    if not any(p["mrn"] == patient_id for p in data.patients()):
        abort(404)
    try:
        value = register_launch(patient_id, user.get("sub"))
    except LaunchFailed as exc:
        return render_template("error.html", message=str(exc)), 502
    from urllib.parse import urlencode

    target = current_app.extensions["ehr.smart_app"]["launch_url"]
    return redirect(f"{target}?{urlencode({'iss': fhir_base(), 'launch': value})}")
