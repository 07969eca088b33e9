"""What the two relying parties share: settings, OIDC sign-in and sign-out, the session cookie.

Sign-in is Authlib's Flask client: authorization code flow with PKCE (S256), state and nonce,
the ID token checked against the IdP's JWKS, and the RFC 9207 `iss` response parameter checked
(the IdP advertises it). Sign-out is RP-Initiated Logout: the local session is cleared first,
then the browser goes to the IdP's end_session_endpoint with id_token_hint,
post_logout_redirect_uri and state.

All three development apps share the host 127.0.0.1 and browsers do not separate cookies by
port, so each app sends its cookie to the others: the session cookie is therefore encrypted
(Fernet), not only signed, so the portal's tokens are not readable by the EHR or the IdP.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import time
import zlib
from dataclasses import dataclass
from typing import Any

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from cryptography.fernet import Fernet, InvalidToken
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from itsdangerous import BadSignature
from joserfc.errors import JoseError

log = logging.getLogger(__name__)
EXPIRY_MARGIN = 30  # seconds: treat an access token this close to expiry as expired


class ConfigError(Exception):
    """A required setting is missing; the message names the variable."""


@dataclass(frozen=True)
class RpSettings:
    name: str            # "portal" or "ehr": env prefix, cookie name, Authlib client name
    title: str
    issuer: str
    base_url: str        # where the browser reaches this app; redirect URIs derive from it
    client_id: str
    client_secret: str
    scope: str
    secret_key: str

    @property
    def redirect_uri(self) -> str:
        return f"{self.base_url}/callback"

    @property
    def post_logout_redirect_uri(self) -> str:
        return f"{self.base_url}/"

    @classmethod
    def from_env(cls, name: str, title: str, default_url: str, scope: str,
                 env: dict[str, str] | None = None) -> RpSettings:
        env = dict(os.environ if env is None else env)
        prefix = name.upper()
        secret = env.get(f"{prefix}_CLIENT_SECRET")
        if not secret:
            raise ConfigError(f"{prefix}_CLIENT_SECRET is not set (`make run` sets it; or run "
                              "`idp demo seed` and read instance/demo-clients.json)")
        key = env.get(f"{prefix}_SECRET_KEY")
        if not key:
            log.warning("%s_SECRET_KEY is not set: using a random key (one process only)",
                        prefix)
            key = secrets.token_urlsafe(32)
        return cls(name=name, title=title,
                   issuer=env.get("IDP_ISSUER", "http://127.0.0.1:8000").rstrip("/"),
                   base_url=env.get(f"{prefix}_URL", default_url).rstrip("/"),
                   client_id=env.get(f"{prefix}_CLIENT_ID", name), client_secret=secret,
                   scope=scope, secret_key=key)


# -- encrypted cookie session ----------------------------------------------------------------
class _Sealer:
    """itsdangerous-like serializer: Fernet (AES-CBC + HMAC) over Flask's tagged JSON, deflated
    first (tokens fill most of the cookie; browsers keep at most about 4 KB of it)."""

    def __init__(self, secret_key: str) -> None:
        raw = hashlib.sha256(b"rp-session-cookie\0" + secret_key.encode()).digest()
        self.fernet = Fernet(base64.urlsafe_b64encode(raw))
        self.json = TaggedJSONSerializer()

    def dumps(self, data: dict[str, Any]) -> str:
        plain = zlib.compress(self.json.dumps(data).encode())
        return self.fernet.encrypt(plain).decode("ascii")

    def loads(self, value: str, max_age: int | None = None) -> dict[str, Any]:
        try:
            plain = self.fernet.decrypt(value.encode("ascii"), ttl=max_age)
            return self.json.loads(zlib.decompress(plain))  # authentic: we wrote it
        except (InvalidToken, UnicodeError, ValueError, zlib.error):
            raise BadSignature("session cookie cannot be opened") from None


class EncryptedSessionInterface(SecureCookieSessionInterface):
    def get_signing_serializer(self, app: Flask) -> _Sealer | None:  # type: ignore[override]
        return _Sealer(app.secret_key) if app.secret_key else None


# -- the Authlib client and the views --------------------------------------------------------
bp = Blueprint("rp", __name__)


def rp_settings() -> RpSettings:
    return current_app.extensions["rp"]


def _client() -> Any:
    return current_app.extensions["rp.client"]


def init_rp(app: Flask, settings: RpSettings) -> None:
    """Configure the app as a relying party of the IdP."""
    app.extensions["rp"] = settings
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME=f"{settings.name}_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    app.session_interface = EncryptedSessionInterface()
    CSRFProtect(app)
    app.extensions["rp.client"] = OAuth(app).register(
        settings.name, client_id=settings.client_id, client_secret=settings.client_secret,
        server_metadata_url=f"{settings.issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": settings.scope, "code_challenge_method": "S256",
                       "default_timeout": 10})
    app.register_blueprint(bp)
    app.before_request(_canonical_host)
    app.after_request(_security_headers)
    app.context_processor(lambda: {"user": current_user()})
    app.register_error_handler(CSRFError, lambda exc: _error(
        "This form has expired. Go back, reload the page and try again.", 400))


def _canonical_host() -> Response | None:
    """Cookies and redirect URIs are bound to base_url: send other host names there."""
    base = rp_settings().base_url
    if request.host_url.rstrip("/") != base and request.endpoint != "rp.healthz":
        return redirect(base + request.full_path.rstrip("?"))
    return None


def _security_headers(response: Response) -> Response:
    issuer = rp_settings().issuer
    headers = response.headers
    headers.setdefault("Content-Security-Policy",
                       "default-src 'self'; script-src 'self'; style-src 'self'; "
                       "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                       f"frame-ancestors 'none'; form-action 'self' {issuer}")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")  # the callback URL carries the code
    if response.mimetype == "text/html":
        headers["Cache-Control"] = "no-store"
    return response


def _error(message: str, status: int) -> tuple[str, int]:
    return render_template("error.html", message=message), status


@bp.get("/login")
def login() -> Response | tuple[str, int]:
    try:
        return _client().authorize_redirect(redirect_uri=rp_settings().redirect_uri)
    except requests.RequestException:
        return _error("The identity provider cannot be reached. Try again in a moment.", 502)


@bp.get("/callback")
def callback() -> Response | tuple[str, int]:
    client = _client()
    try:
        metadata = client.load_server_metadata()
        iss = request.args.get("iss")
        required = metadata.get("authorization_response_iss_parameter_supported")
        if (iss is not None or required) and iss != metadata.get("issuer"):  # RFC 9207
            return _error("The sign-in response did not come from our identity provider.", 400)
        token = client.authorize_access_token()
    except OAuthError as exc:
        if exc.error == "access_denied":
            return _error("Sign-in was cancelled.", 400)
        log.warning("sign-in failed: %s", exc.error)
        return _error("Sign-in did not complete. Start again from the home page.", 400)
    except JoseError as exc:  # the ID token: signature, iss, aud, nonce, exp, at_hash
        log.warning("ID token refused: %s", exc.error)
        return _error("Sign-in did not complete. Start again from the home page.", 400)
    except requests.RequestException:
        return _error("The identity provider cannot be reached. Try again in a moment.", 502)
    claims = token.get("userinfo") or {}
    session.clear()  # a fresh session for a fresh sign-in
    session["user"] = {
        "sub": claims.get("sub"), "name": claims.get("name") or claims.get(
            "preferred_username") or "", "username": claims.get("preferred_username"),
        "email": claims.get("email"), "npi": claims.get("npi"),
        "roles": [r for r in claims.get("roles") or [] if isinstance(r, str)],
        "facility": claims.get("facility"), "department": claims.get("department"),
    }
    session["token"] = {"access_token": token["access_token"],
                        "expires_at": int(token.get("expires_at") or time.time() + 60)}
    session["id_token"] = token.get("id_token")
    return redirect(url_for("pages.index"))


@bp.post("/logout")
def logout() -> Response:
    id_token = session.get("id_token")
    session.clear()  # local sign-out first, whatever happens at the IdP
    if not id_token:
        return redirect(url_for("pages.index"))
    try:
        return _client().logout_redirect(
            post_logout_redirect_uri=rp_settings().post_logout_redirect_uri,
            id_token_hint=id_token)
    except requests.RequestException:
        return redirect(url_for("pages.index"))


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# -- helpers for the apps' own views ---------------------------------------------------------
def current_user() -> dict[str, Any] | None:
    return session.get("user")


def access_token() -> str | None:
    """The signed-in user's access token, or None once it is (about to be) expired."""
    token = session.get("token") or {}
    if token.get("expires_at", 0) - EXPIRY_MARGIN <= time.time():
        return None
    return token.get("access_token")


def returned_from_logout() -> bool:
    """True on the post-logout redirect carrying the state this browser sent."""
    if "state" not in request.args:
        return False
    try:
        _client().validate_logout_response()
    except OAuthError:
        return False
    return True
