"""The machine-to-machine hot paths answered in front of Flask: a client_credentials token
and the introspection of an active access token, both with HTTP Basic client credentials.

At shift change every EHR and service calls these two endpoints; through Flask and Authlib
each answer paid about 1 ms of request machinery (request context, form parsing, hooks,
Authlib's request objects, the ORM), more than the work itself (profiled with py-spy under
load). This WSGI layer does that work with the same functions the Flask views end in:
`Server.query_client`, `Client.check_client_secret`, `Server.validate_requested_scope`,
`check_userless_scope`, the token generator, `record_issue` (the audit event, in the
token's transaction or group-commit batch, idp.audit.group_commit),
`tokens.verify_access_token` and `introspection_body`.

It answers only the plain, valid case. Anything else goes to Flask unchanged (the body it
read is handed on): every refusal (wrong secret, unknown client, bad scope, inactive token),
every other grant or authentication method, a query string, a repeated or unexpected
parameter, a body that is not small ASCII form data, a NUL anywhere, and every request until
Flask has answered the same kind of request 200 for that scheme and Host (so the trusted-host
check and the response headers are Flask's: this layer replays the headers Flask sent).
An error here (the database down, a bug) is logged by type and the request goes to Flask,
which answers it as it would have.

`IDP_FAST_LANE=0` turns it off.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from idp.audit import group_commit
from idp.core import request_log
from idp.extensions import db
from idp.oidc import client_profile, tokens
from idp.oidc.endpoints import AccessToken, introspection_body
from idp.oidc.models import Client
from idp.oidc.server import check_userless_scope, record_issue, server, token_generator

log = logging.getLogger("idp.fast_lane")
WsgiApp = Callable[[dict, Callable], Iterable[bytes]]
FORM = "application/x-www-form-urlencoded"
MAX_BODY = 8192      # bytes: a token or introspection request is far smaller
MAX_HOSTS = 16       # (scheme, Host) pairs remembered per path (a bound, not a tuning knob)
_DROPPED = {"x-request-id", "set-cookie", "content-length", "date"}


@dataclass
class Answer:
    body: dict
    client_id: str


@dataclass
class _Learned:
    headers: list[tuple[str, str]]
    hosts: set[tuple[str, str]] = field(default_factory=set)


def _basic_client(environ: dict, endpoint: str) -> Client | None:
    """The client named by valid client_secret_basic credentials registered for that method,
    else None (Flask then answers with the right error)."""
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return None
    try:  # strict, where Authlib's parser skips stray characters: those go to Flask
        base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, secret = extract_basic_authorization({"Authorization": header})
    if not client_id or not secret:
        return None
    client = server.query_client(client_id)
    if client is None or not client.check_endpoint_auth_method("client_secret_basic", endpoint):
        return None
    return client if client.check_client_secret(secret) else None


def client_credentials(environ: dict, form: dict[str, str]) -> Answer | None:
    """POST /token, grant_type=client_credentials: what ClientCredentialsGrant does."""
    if form.get("grant_type") != "client_credentials" or \
            not set(form) <= {"grant_type", "scope"} or "HTTP_DPOP" in environ:
        return None  # a DPoP proof is checked by Flask's token endpoint (idp.oidc.dpop)
    client = _basic_client(environ, "token")
    if client is None or not client.check_grant_type("client_credentials") or \
            client_profile.requires_dpop(client):
        return None
    scope = form.get("scope")
    try:
        server.validate_requested_scope(scope)
        check_userless_scope(client, scope)
    except OAuth2Error:
        return None
    client_id = client.client_id
    with group_commit.staged():  # the record and the event through the committer (when on)
        token = token_generator(grant_type="client_credentials", client=client, scope=scope,
                                 include_refresh_token=False)
        record_issue(token, client, None, "client_credentials", ip=environ.get("REMOTE_ADDR"),
                     user_agent=environ.get("HTTP_USER_AGENT") or None)
        group_commit.commit(db.session)
    return Answer(token, client_id)


def introspection(environ: dict, form: dict[str, str]) -> Answer | None:
    """POST /introspect of an active JWT access token the client may see."""
    if "token" not in form or not set(form) <= {"token", "token_type_hint"} or \
            form.get("token_type_hint", "access_token") != "access_token":
        return None
    client = _basic_client(environ, "introspection")
    if client is None:
        return None
    try:
        claims, record = tokens.verify_access_token(form["token"], check_revoked=False,
                                                    with_user=False)
    except tokens.InvalidToken:
        return None
    token = AccessToken(claims, record)
    if not (client.introspect_any or token.check_client(client)) or token.is_expired() \
            or token.is_revoked():
        return None
    return Answer(introspection_body(token), client.client_id)


HANDLERS: dict[str, Callable[[dict, dict[str, str]], Answer | None]] = {
    "/token": client_credentials,
    "/introspect": introspection,
}
# What a Flask answer must have been for to teach this layer its headers.
SHAPES: dict[str, Callable[[dict[str, str]], bool]] = {
    "/token": lambda form: form.get("grant_type") == "client_credentials",
    "/introspect": lambda form: "token" in form,
}


def _plain(environ: dict) -> bool:
    if environ.get("QUERY_STRING") or environ.get("HTTP_TRANSFER_ENCODING"):
        return False
    if environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower() != FORM:
        return False
    length = environ.get("CONTENT_LENGTH", "")
    if not length.isdigit() or not 0 < int(length) <= MAX_BODY:
        return False
    return not any("\x00" in value for key, value in environ.items()
                   if key.startswith("HTTP_") and isinstance(value, str))


def _form(body: bytes, max_length: int) -> dict[str, str] | None:
    """The single-valued fields of a small ASCII url-encoded body, else None."""
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True,
                          errors="strict", max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return None
    form = dict(pairs)
    if len(form) != len(pairs) or any(
            len(k) > max_length or len(v) > max_length or "\x00" in v for k, v in pairs):
        return None
    return form


class FastLane:
    """WSGI middleware; see the module docstring."""

    def __init__(self, app: Flask, wsgi_app: WsgiApp) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.learned: dict[str, _Learned] = {}
        self.served = 0  # answers given here (tests read it)
        self.enabled = True  # tests measure the Flask path with it off

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        handler = HANDLERS.get(path)
        if handler is None or not self.enabled or environ.get("REQUEST_METHOD") != "POST" \
                or not _plain(environ):
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        environ["wsgi.input"] = BytesIO(body)  # for Flask, should the request go on to it
        form = _form(body, self.app.extensions["idp"].policy.web.max_param_length)
        if form is None:
            return self.wsgi_app(environ, start_response)
        host = (environ.get("wsgi.url_scheme", ""), environ.get("HTTP_HOST", ""))
        learned = self.learned.get(path)
        if learned is None or host not in learned.hosts:
            if not SHAPES[path](form):
                return self.wsgi_app(environ, start_response)
            return self._learn(path, host, environ, start_response)
        answer = self._answer(handler, environ, form)
        if answer is None:
            environ["wsgi.input"].seek(0)
            return self.wsgi_app(environ, start_response)
        self.served += 1
        payload = json.dumps(answer.body).encode()  # as Authlib's Flask integration writes it
        rid = request_log.request_id_for(environ.get("HTTP_X_REQUEST_ID", ""))
        headers = [*learned.headers, ("Content-Length", str(len(payload))),
                   ("X-Request-ID", rid)]
        start_response("200 OK", headers)
        request_log.log_wsgi_answer(environ, rid, path, 200, started, answer.client_id)
        return [payload]

    def _answer(self, handler: Callable[[dict, dict[str, str]], Answer | None], environ: dict,
                form: dict[str, str]) -> Answer | None:
        with self.app.app_context():
            try:
                return handler(environ, form)
            except Exception as exc:  # noqa: BLE001 - Flask answers it, as it would have
                db.session.rollback()
                level = logging.WARNING if isinstance(exc, SQLAlchemyError) else logging.ERROR
                log.log(level, "fast lane: %s on %s; handed to Flask", type(exc).__name__,
                        environ.get("PATH_INFO"))
                return None

    def _learn(self, path: str, host: tuple[str, str], environ: dict,
               start_response: Callable) -> Iterable[bytes]:
        seen: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"], seen["headers"] = status, headers
            return start_response(status, headers, exc_info)

        result = self.wsgi_app(environ, capture)
        headers = seen.get("headers") or []
        if seen.get("status", "").startswith("200") and \
                not any(k.lower() == "set-cookie" for k, _ in headers):
            kept = [(k, v) for k, v in headers if k.lower() not in _DROPPED]
            previous = self.learned.get(path)
            hosts = previous.hosts if previous is not None and previous.headers == kept \
                else set()
            if len(hosts) < MAX_HOSTS:
                hosts = hosts | {host}
            self.learned[path] = _Learned(kept, hosts)
        return result


def install(app: Flask) -> None:
    """Wrap app.wsgi_app (inside any proxy middleware, so REMOTE_ADDR and Host are the ones
    ProxyFix derived)."""
    if not app.extensions["idp"].settings.fast_lane:
        return
    lane = FastLane(app, app.wsgi_app)
    app.extensions["idp_fast_lane"] = lane
    app.wsgi_app = lane
