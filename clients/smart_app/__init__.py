"""A demo third-party SMART on FHIR app ("Patient summary"): a public client (no secret) using
the authorization code flow with PKCE (S256). `gunicorn "clients.smart_app:create_app()"`.

EHR launch: the EHR opens GET /launch?iss=<FHIR base>&launch=<opaque>; the app accepts only the
FHIR server it trusts (SMART_APP_FHIR_BASE), reads <iss>/.well-known/smart-configuration, and
sends the browser to its authorization_endpoint with `launch`, `aud=<iss>` and scope
`openid fhirUser launch patient/Patient.rs`. Standalone launch: GET /start asks for
`launch/patient` instead (the IdP lets the user choose a patient). The callback checks state and
the RFC 9207 `iss`, exchanges the code with the PKCE verifier, checks the ID token (signature
from the IdP's JWKS, iss, aud, nonce, exp), then reads the patient named by the token response's
`patient` from the FHIR server with the access token. Nothing is kept after the page is shown:
the access token never leaves the server side of the request.

Environment: IDP_ISSUER (default http://127.0.0.1:8000), SMART_APP_URL (http://127.0.0.1:8003),
SMART_APP_CLIENT_ID (smart-app), SMART_APP_FHIR_BASE (http://127.0.0.1:8002/fhir),
SMART_APP_SECRET_KEY (the encrypted session cookie; random per process when unset).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request
from flask import session as cookie
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from clients.jwks import IssuerKeys, KeysUnavailable
from clients.rp import EncryptedSessionInterface, shared_static

log = logging.getLogger(__name__)
EHR_LAUNCH_SCOPE = "openid fhirUser launch patient/Patient.rs"
STANDALONE_SCOPE = "openid fhirUser launch/patient patient/Patient.rs"
bp = Blueprint("app", __name__)


@dataclass(frozen=True)
class AppSettings:
    issuer: str
    base_url: str
    client_id: str
    fhir_base: str

    @property
    def redirect_uri(self) -> str:
        return f"{self.base_url}/callback"


def create_app(env: dict[str, str] | None = None) -> Flask:
    env = dict(os.environ if env is None else env)
    settings = AppSettings(
        issuer=env.get("IDP_ISSUER", "http://127.0.0.1:8000").rstrip("/"),
        base_url=env.get("SMART_APP_URL", "http://127.0.0.1:8003").rstrip("/"),
        client_id=env.get("SMART_APP_CLIENT_ID", "smart-app"),
        fhir_base=env.get("SMART_APP_FHIR_BASE", "http://127.0.0.1:8002/fhir").rstrip("/"))
    app = Flask(__name__)
    app.config.update(SECRET_KEY=env.get("SMART_APP_SECRET_KEY") or secrets.token_urlsafe(32),
                      SESSION_COOKIE_NAME="smart_app_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"))
    # The three demo apps share one host: the cookie (PKCE verifier) is encrypted, not only
    # signed, as the portal's and the EHR's are.
    app.session_interface = EncryptedSessionInterface()
    app.extensions["smart_app"] = settings
    app.extensions["smart_app.http"] = requests  # .get / .post; tests route these
    app.extensions["smart_app.keys"] = IssuerKeys(settings.issuer)
    app.register_blueprint(bp)
    app.register_blueprint(shared_static)
    app.after_request(_headers)
    return app


def _settings() -> AppSettings:
    return current_app.extensions["smart_app"]


def _http() -> Any:
    return current_app.extensions["smart_app.http"]


def _headers(response: Response) -> Response:
    # "Choose a patient" submits to /start, which redirects to the authorization server.
    response.headers.setdefault(
        "Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        f"form-action 'self' {_settings().issuer}")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")  # URLs carry code, launch
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


def _error(message: str, status: int = 400) -> tuple[str, int]:
    return render_template("app_error.html", message=message), status


class Unavailable(Exception):
    """A server the app needs did not answer as expected; str() is safe to show."""


def _json(response: Any, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise Unavailable(f"{what} answered something other than JSON") from None
    if not isinstance(body, dict):
        raise Unavailable(f"{what} answered something unexpected")
    return body


def _smart_configuration(iss: str) -> dict[str, Any]:
    try:
        answer = _http().get(f"{iss}/.well-known/smart-configuration", timeout=5)
    except requests.RequestException:
        raise Unavailable("the EHR cannot be reached") from None
    document = _json(answer, "the EHR")
    if answer.status_code != 200 or document.get("issuer") != _settings().issuer:
        raise Unavailable("the EHR's SMART configuration names another authorization server")
    if "S256" not in document.get("code_challenge_methods_supported", []):
        raise Unavailable("the authorization server does not support PKCE S256")
    return document


def _begin(iss: str, scope: str, launch: str | None) -> Response | tuple[str, int]:
    settings = _settings()
    try:
        config = _smart_configuration(iss)
    except Unavailable as exc:
        return _error(f"Cannot start: {exc}.", 502)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    params = {"response_type": "code", "client_id": settings.client_id,
              "redirect_uri": settings.redirect_uri, "scope": scope, "state": state,
              "nonce": nonce, "aud": iss, "code_challenge": challenge,
              "code_challenge_method": "S256"}
    if launch:
        params["launch"] = launch
    cookie["pending"] = {"state": state, "nonce": nonce, "verifier": verifier, "iss": iss,
                         "token_endpoint": config["token_endpoint"]}
    return redirect(f"{config['authorization_endpoint']}?{urlencode(params)}")


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/")
def index() -> str:
    return render_template("app_index.html", fhir_base=_settings().fhir_base)


@bp.get("/launch")
def launch() -> Response | tuple[str, int]:
    """EHR launch: iss must be the FHIR server this app trusts (never follow any iss)."""
    iss, value = request.args.get("iss", "").rstrip("/"), request.args.get("launch")
    if iss != _settings().fhir_base:
        return _error("This app was launched by an EHR it does not know.")
    if not value or len(value) > 256:
        return _error("The launch request has no launch value.")
    return _begin(iss, EHR_LAUNCH_SCOPE, value)


@bp.get("/start")
def start() -> Response | tuple[str, int]:
    """Standalone launch: the authorization server asks which patient."""
    return _begin(_settings().fhir_base, STANDALONE_SCOPE, None)


def _check_id_token(id_token: str, nonce: str) -> dict[str, Any]:
    settings = _settings()
    decoded = current_app.extensions["smart_app.keys"].decode(id_token)
    JWTClaimsRegistry(iss={"essential": True, "value": settings.issuer},
                      aud={"essential": True, "value": settings.client_id},
                      nonce={"essential": True, "value": nonce},
                      exp={"essential": True}, sub={"essential": True}
                      ).validate(decoded.claims)
    return decoded.claims


@bp.get("/callback")
def callback() -> str | tuple[str, int]:
    settings = _settings()
    pending = cookie.pop("pending", None)
    if not isinstance(pending, dict) or request.args.get("state") != pending.get("state"):
        return _error("This sign-in response does not belong to a launch of this browser.")
    if request.args.get("iss") != settings.issuer:  # RFC 9207
        return _error("The response did not come from the expected authorization server.")
    if "error" in request.args:
        return _error(f"The authorization server refused: {request.args.get('error')} "
                      f"({request.args.get('error_description', '')}).")
    try:
        answer = _http().post(pending["token_endpoint"], timeout=5, data={
            "grant_type": "authorization_code", "code": request.args.get("code", ""),
            "redirect_uri": settings.redirect_uri, "client_id": settings.client_id,
            "code_verifier": pending["verifier"]})
        token = _json(answer, "the token endpoint")
        if answer.status_code != 200:
            return _error(f"The code exchange failed: {token.get('error', '?')}.")
        claims = _check_id_token(token.get("id_token") or "", pending["nonce"])
        patient_id = token.get("patient")
        if not isinstance(patient_id, str):
            return _error("The authorization server returned no patient context.")
        read = _http().get(f"{pending['iss']}/Patient/{patient_id}", timeout=5, headers={
            "Authorization": f"Bearer {token['access_token']}",
            "Accept": "application/fhir+json"})
        patient = _json(read, "the FHIR server")
    except (requests.RequestException, Unavailable, KeysUnavailable) as exc:
        log.warning("launch failed: %s", type(exc).__name__)
        return _error("A server this app needs cannot be reached. Try again.", 502)
    except (JoseError, ValueError, TypeError) as exc:
        log.warning("ID token refused: %s", type(exc).__name__)
        return _error("The sign-in could not be verified.")
    if read.status_code != 200:
        return _error(f"The FHIR server refused to read the patient (HTTP {read.status_code}).",
                      502)
    name = ((patient.get("name") or [{}])[0] or {}).get("text", "")
    return render_template("app_patient.html", patient=patient, name=name,
                           fhir_user=claims.get("fhirUser"), encounter=token.get("encounter"),
                           scope=token.get("scope", ""))
