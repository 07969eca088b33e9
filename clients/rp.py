"""What the two relying parties share: settings, OIDC sign-in and sign-out, the session cookie.

Sign-in is Authlib's Flask client: authorization code flow with PKCE (S256), state and nonce,
the ID token checked against the IdP's JWKS, and the RFC 9207 `iss` response parameter checked
(the IdP advertises it). Sign-out is RP-Initiated Logout: the local session is cleared first,
then the browser goes to the IdP's end_session_endpoint with id_token_hint,
post_logout_redirect_uri and state.

Back-Channel Logout: the IdP POSTs a logout token to /backchannel-logout when the SSO session
ends (logout at another app, idle timeout, sign-out everywhere, ...). The RP validates it
(clients.backchannel) and records the ended sid in a small store shared by its workers; every
request of a session with an ended sid finds it there and is signed out. Step-up: step_up()
sends the browser back to the IdP with acr_values; the callback returns to the page that asked.

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
import sqlite3
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from cryptography.fernet import Fernet, InvalidToken
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
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

from clients import i18n
from clients.backchannel import (
    LEEWAY,
    MAX_AGE,
    LogoutStore,
    LogoutTokenError,
    LogoutTokenVerifier,
)
from clients.i18n import gettext as _
from clients.i18n import lazy_gettext as _l
from clients.jwks import KeysUnavailable

log = logging.getLogger(__name__)
EXPIRY_MARGIN = 30  # seconds: treat an access token this close to expiry as expired
# An RP session lasts at most as long as the IdP's absolute session timeout (12 hours); the
# record of sessions the IdP ended is kept a little longer, so it outlives every session.
SESSION_MAX_AGE = 12 * 3600
ENDED_RETENTION = SESSION_MAX_AGE + 3600
DEFAULT_STATE_DIR = Path(__file__).resolve().parent.parent / "instance"


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
    state_dir: str = str(DEFAULT_STATE_DIR)  # the RP's small server-side store lives here

    @property
    def redirect_uri(self) -> str:
        return f"{self.base_url}/callback"

    @property
    def post_logout_redirect_uri(self) -> str:
        return f"{self.base_url}/"

    @property
    def backchannel_logout_uri(self) -> str:
        return f"{self.base_url}/backchannel-logout"

    @property
    def state_file(self) -> Path:
        return Path(self.state_dir) / f"{self.name}-rp-state.sqlite3"

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
                   scope=scope, secret_key=key,
                   state_dir=env.get(f"{prefix}_STATE_DIR") or str(DEFAULT_STATE_DIR))


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
    app.register_blueprint(shared_static)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME=f"{settings.name}_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    app.session_interface = EncryptedSessionInterface()
    csrf = CSRFProtect(app)
    csrf.exempt(backchannel_logout)  # server to server: the logout token is the proof
    app.extensions["rp.logout_tokens"] = LogoutTokenVerifier(settings.issuer, settings.client_id)
    app.extensions["rp.store"] = LogoutStore(settings.state_file, ENDED_RETENTION)
    app.extensions["rp.client"] = OAuth(app).register(
        settings.name, client_id=settings.client_id, client_secret=settings.client_secret,
        server_metadata_url=f"{settings.issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": settings.scope, "code_challenge_method": "S256",
                       "default_timeout": 10})
    app.register_blueprint(bp)
    i18n.install(app, settings.state_dir)
    app.before_request(_canonical_host)
    app.before_request(_end_session_if_ended)
    app.after_request(_security_headers)
    app.context_processor(lambda: {"user": current_user(),
                                   "ended_elsewhere": g.get("rp_session_ended", False)})
    app.register_error_handler(CSRFError, lambda exc: _error(
        _("This form has expired. Go back, reload the page and try again."), 400))


def _canonical_host() -> Response | None:
    """Cookies and redirect URIs are bound to base_url: send other host names there."""
    base = rp_settings().base_url
    if request.host_url.rstrip("/") != base and request.endpoint not in (
            "rp.healthz", "rp.backchannel_logout"):
        return redirect(base + request.full_path.rstrip("?"))
    return None


def _store() -> LogoutStore:
    return current_app.extensions["rp.store"]


def _end_session_if_ended() -> None:
    """A session the IdP ended (back-channel logout), or older than SESSION_MAX_AGE, is
    signed out here, on its next request, whichever worker serves it."""
    # Never on a stylesheet: a sign-out noticed there would never show the page's notice.
    if request.endpoint in ("rp.backchannel_logout", "rp.healthz", "static",
                            "rp_static.static") or "user" not in session:
        return
    signed_in_at = session.get("signed_in_at")
    if not isinstance(signed_in_at, int | float) or \
            time.time() - signed_in_at > SESSION_MAX_AGE:
        ended = True
    else:
        try:
            ended = _store().is_ended(sid=session.get("sid"),
                                      sub=(session.get("user") or {}).get("sub"),
                                      signed_in_at=signed_in_at)
        except sqlite3.Error:
            log.exception("the logout store cannot be read: signing the session out")
            ended = True  # fail closed
    if ended:
        session.clear()
        g.rp_session_ended = True


def _security_headers(response: Response) -> Response:
    issuer = rp_settings().issuer
    # Forms may also lead to the origins an app names here (the EHR's SMART app launch).
    targets = "".join(f" {t}" for t in current_app.extensions.get("rp.form_targets", ()))
    headers = response.headers
    headers.setdefault("Content-Security-Policy",
                       "default-src 'self'; script-src 'self'; style-src 'self'; "
                       "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                       f"frame-ancestors 'none'; form-action 'self' {issuer}{targets}")
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
    session.pop("step_up", None)
    try:
        return _client().authorize_redirect(redirect_uri=rp_settings().redirect_uri,
                                            **_ui_locales())
    except requests.RequestException:
        return _error(UNREACHABLE(), 502)


def UNREACHABLE() -> str:  # noqa: N802 - reads as the constant it stands for
    return _("The identity provider cannot be reached. Try again in a moment.")


def _ui_locales() -> dict[str, str]:
    """OIDC Core §3.1.2.1 ui_locales: the IdP's sign-in pages in this page's language."""
    return {"ui_locales": i18n.select_locale()}


SILENT_ERRORS = ("login_required", "interaction_required", "consent_required",
                 "account_selection_required")


def silent_login() -> Response | None:
    """Single sign-on without a click: once per browser session, ask the IdP with
    prompt=none; an SSO session there signs the user in at once, none brings them back to the
    landing page (the callback answers login_required quietly). None: tried already, or the
    IdP cannot be reached (the landing page shows its "Sign in" button then)."""
    if session.get("silent_tried"):
        return None
    session["silent_tried"] = True
    try:
        response = _client().authorize_redirect(redirect_uri=rp_settings().redirect_uri,
                                                prompt="none", **_ui_locales())
    except requests.RequestException:
        return None
    session["silent"] = True
    return response


def _pushed_redirect(redirect_uri: str, **params: str) -> Response | tuple[str, int]:
    """RFC 9126: the authorization request (state, nonce and PKCE as usual) pushed to the
    IdP's PAR endpoint with this client's authentication, then the browser sent to
    /authorize with client_id and the request_uri only."""
    client, settings = _client(), rp_settings()
    metadata = client.load_server_metadata()
    endpoint = metadata.get("pushed_authorization_request_endpoint")
    if not endpoint:
        return _error(_("The identity provider does not take pushed requests."), 502)
    made = client.create_authorization_url(redirect_uri, **params)
    client.save_authorize_data(redirect_uri=redirect_uri, **made)
    pushed = requests.post(endpoint, data=dict(parse_qsl(urlsplit(made["url"]).query)),
                           auth=(settings.client_id, settings.client_secret), timeout=10)
    try:
        body = pushed.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    if pushed.status_code != 201 or not isinstance(body.get("request_uri"), str):
        log.warning("pushed authorization request refused: %s", body.get("error"))
        described = str(body.get("error_description") or "")[:600]
        return _error(_("The identity provider refused the request: %(why)s", why=described)
                      if described else _("The identity provider refused the request."), 400)
    return redirect(metadata["authorization_endpoint"] + "?" + urlencode(
        {"client_id": settings.client_id, "request_uri": body["request_uri"]}))


def step_up(acr: str, return_to: str, scope: str | None = None, *,
            extra: dict[str, str] | None = None, carry: dict[str, Any] | None = None,
            title: str | None = None, pushed: bool = False) -> Response | tuple[str, int]:
    """Send the browser to the IdP for a sign-in of at least `acr` (acr_values), then back
    to `return_to` (a path of this app). The present session stays until the new one comes.

    `extra`: more authorization parameters (max_age, binding_message). `carry`: kept through
    the round trip; the callback leaves it, with the new ID token's claims, in
    session["step_up_result"] for `return_to` to check. With `title`, an IdP error is shown
    under that title with the IdP's own error_description. `pushed`: send the request by PAR
    (RFC 9126) with this client's authentication (what the IdP requires for EPCS
    authorization_details)."""
    params = {"acr_values": acr, "scope": scope or rp_settings().scope, **_ui_locales(),
              **(extra or {})}
    try:
        if pushed:
            response = _pushed_redirect(rp_settings().redirect_uri, **params)
        else:
            response = _client().authorize_redirect(redirect_uri=rp_settings().redirect_uri,
                                                     **params)
    except requests.RequestException:
        return _error(UNREACHABLE(), 502)
    pending: dict[str, Any] = {"acr": acr, "return_to": return_to}
    if carry is not None:
        pending["carry"] = carry
    if title:
        pending["title"] = title
    session["step_up"] = pending
    return response


def _local_path(value: object) -> str | None:
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") \
            and "\\" not in value:
        return value
    return None


STEP_UP_ERRORS = {
    "unmet_authentication_requirements": _l(
        "This action needs a phishing-resistant sign-in: a security key, or your device's "
        "fingerprint or face unlock. Your account has none set up yet. Add one under "
        "\u201cSign-in methods\u201d at the identity provider, then try again."),
    "access_denied": _l("The extra sign-in was cancelled; nothing was done."),
}


def _step_up_error(error: str | None) -> tuple[str, int] | None:
    """The IdP answered a step-up request (of this browser: its state) with an error: say so
    plainly; the session from before stays as it was."""
    pending = session.get("step_up")
    state = request.args.get("state")
    if not pending or not state or _client().framework.get_state_data(session, state) is None:
        return None
    _client().framework.clear_state_data(session, state)
    session.pop("step_up", None)
    known = STEP_UP_ERRORS.get(error or "")
    message = str(known) if known is not None else _(
        "The extra sign-in did not complete; nothing was done. Try again.")
    described = request.args.get("error_description", "")[:600]
    if pending.get("title") and described:
        message = described  # the IdP's words (escaped by Jinja): what exactly is missing
    return render_template("error.html", message=message,
                           title=_(pending["title"]) if pending.get("title")
                           else _("A stronger sign-in is needed"),
                           manage_url=f"{rp_settings().issuer}/mfa/factors",
                           back=_local_path(pending.get("return_to"))), 403


@bp.get("/callback")
def callback() -> Response | tuple[str, int]:
    client = _client()
    try:
        metadata = client.load_server_metadata()
        iss = request.args.get("iss")
        required = metadata.get("authorization_response_iss_parameter_supported")
        if (iss is not None or required) and iss != metadata.get("issuer"):  # RFC 9207
            return _error(_("The sign-in response did not come from our identity provider."),
                          400)
        token = client.authorize_access_token()
    except OAuthError as exc:
        if session.pop("silent", False) and exc.error in SILENT_ERRORS:
            return redirect(url_for("pages.index"))  # no SSO session: the landing page
        readable = _step_up_error(exc.error)
        if readable is not None:
            return readable
        if exc.error == "access_denied":
            return _error(_("Sign-in was cancelled."), 400)
        log.warning("sign-in failed: %s", exc.error)
        return _error(_("Sign-in did not complete. Start again from the home page."), 400)
    except JoseError as exc:  # the ID token: signature, iss, aud, nonce, exp, at_hash
        log.warning("ID token refused: %s", exc.error)
        return _error(_("Sign-in did not complete. Start again from the home page."), 400)
    except requests.RequestException:
        return _error(UNREACHABLE(), 502)
    claims = token.get("userinfo") or {}
    return_to = _local_path((session.get("step_up") or {}).get("return_to"))
    carry = (session.get("step_up") or {}).get("carry")
    session.clear()  # a fresh session for a fresh sign-in
    if carry is not None:
        session["step_up_result"] = {
            "carry": carry, "claims": {k: claims.get(k) for k in (
                "sub", "acr", "amr", "auth_time", "entitlements", "roles", "iat")}}
    session["sid"] = claims.get("sid") if isinstance(claims.get("sid"), str) else None
    session["signed_in_at"] = int(time.time())
    session["user"] = {
        "sub": claims.get("sub"), "name": claims.get("name") or claims.get(
            "preferred_username") or "", "username": claims.get("preferred_username"),
        "email": claims.get("email"), "npi": claims.get("npi"),
        "roles": [r for r in claims.get("roles") or [] if isinstance(r, str)],
        "facility": claims.get("facility"), "department": claims.get("department"),
        "locale": i18n.supported(claims.get("locale")),  # the account's language at the IdP
    }
    session["token"] = {"access_token": token["access_token"],
                        "expires_at": int(token.get("expires_at") or time.time() + 60)}
    session["id_token"] = token.get("id_token")
    return redirect(return_to or url_for("pages.index"))


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


@bp.post("/backchannel-logout")
def backchannel_logout() -> Response:
    """OpenID Connect Back-Channel Logout 1.0 §2.5-2.8: the IdP ended an SSO session."""
    def answer(status: int, error: str | None = None, description: str | None = None
               ) -> Response:
        response = jsonify({"error": error, "error_description": description}) if error \
            else Response(status=status)
        response.status_code = status
        response.headers["Cache-Control"] = "no-store"
        return response

    if request.mimetype != "application/x-www-form-urlencoded":
        return answer(400, "invalid_request", "send logout_token as a form field")
    token = request.form.get("logout_token")
    try:
        claims = current_app.extensions["rp.logout_tokens"].verify(token)
    except LogoutTokenError as exc:
        log.warning("logout token refused: %s", exc)
        return answer(400, "invalid_request", str(exc))
    except KeysUnavailable:
        response = answer(503, "temporarily_unavailable", "cannot check the signature now")
        response.headers["Retry-After"] = "30"
        return response
    keep_until = max(claims.get("exp", 0), claims["iat"] + MAX_AGE) + LEEWAY
    try:
        if not _store().first_use(claims["jti"], keep_until):
            log.warning("logout token replayed (jti seen before)")
            return answer(400, "invalid_request", "logout token replayed (jti seen before)")
        _store().end(sid=claims.get("sid"), sub=claims.get("sub"))
    except sqlite3.Error:
        log.exception("the logout store cannot be written")
        return answer(501, "logout_failed", "the session could not be ended")
    return answer(200)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# -- helpers for the apps' own views ---------------------------------------------------------
def session_minutes_left() -> int:
    """Minutes until this portal session's absolute end (the IdP's idle timeout, 30 minutes
    without activity, may end it sooner)."""
    started = session.get("signed_in_at")
    if not isinstance(started, int):
        return 0
    return max(0, (started + SESSION_MAX_AGE - int(time.time())) // 60)


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


# One stylesheet for the demo relying parties (clients/static/rp.css); each app only sets its
# colour in its own static/brand.css, as the strict CSP allows no inline style.
shared_static = Blueprint("rp_static", __name__, static_folder="static",
                          static_url_path="/rp-static")
