"""Discovery and JWKS answered in front of Flask: the hottest public GETs, identical for everyone.

Every relying party and resource server polls these two documents. Through Flask each answer
paid for the whole request machinery (request context, rate-limit bookkeeping, session,
security hooks), about 0.5 ms, although the body changes only with the configuration or a key
rotation. This WSGI layer keeps the last full answer Flask gave (headers and body, security
headers included) and replays it while the document's state is unchanged; the state is
what the Flask views key their own cache on, so a rotation is served the moment Flask would
serve it.

A request is replayed only when it is a plain GET (no query string) with a Host header that
Flask has already accepted for that path; everything else, and every first request, goes
through Flask unchanged. A replayed request still gets its own X-Request-ID, its request log
line and its metrics sample, and `If-None-Match` is answered with 304.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask

from idp.core import request_log

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]
MAX_HOSTS = 16  # distinct Host values remembered per document (a bound, not a tuning knob)
_DROPPED = {"x-request-id", "set-cookie", "content-length", "date"}


@dataclass
class _Answer:
    state: object
    headers: list[tuple[str, str]]
    body: bytes
    etag: str | None
    hosts: set[str]


def discovery_state(app: Flask) -> object:
    """What the discovery document depends on (also the Flask view's cache key)."""
    runtime = app.extensions["idp"]
    return (id(runtime.settings), id(runtime.policy))


def jwks_state(app: Flask) -> object:
    """The published key ids: they change with rotation and with time (the view's key too)."""
    return tuple(k.kid for k in app.extensions["idp"].keystore.published())


STATES: dict[str, Callable[[Flask], object]] = {
    "/.well-known/openid-configuration": discovery_state,
    "/jwks.json": jwks_state,
}


class PublicDocuments:
    """WSGI middleware; see the module docstring."""

    def __init__(self, app: Flask, wsgi_app: WsgiApp) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.answers: dict[str, _Answer] = {}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        state_of = STATES.get(path)
        if (state_of is None or environ.get("REQUEST_METHOD") != "GET"
                or environ.get("QUERY_STRING")):
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        state = state_of(self.app)
        host = environ.get("HTTP_HOST", "")
        answer = self.answers.get(path)
        if answer is None or answer.state != state or host not in answer.hosts:
            return self._through_flask(path, state, host, environ, start_response)
        return self._replay(path, answer, environ, start_response, started)

    def _through_flask(self, path: str, state: object, host: str, environ: dict,
                       start_response: Callable) -> Iterable[bytes]:
        seen: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"], seen["headers"] = status, headers
            return start_response(status, headers, exc_info)

        body = b"".join(self.wsgi_app(environ, capture))
        headers = seen.get("headers") or []
        if (seen.get("status", "").startswith("200")
                and not any(k.lower() == "set-cookie" for k, _ in headers)):
            kept = [(k, v) for k, v in headers if k.lower() not in _DROPPED]
            etag = next((v for k, v in headers if k.lower() == "etag"), None)
            previous = self.answers.get(path)
            hosts = previous.hosts if previous is not None and previous.state == state else set()
            if len(hosts) < MAX_HOSTS:
                hosts = hosts | {host}
            self.answers[path] = _Answer(state, kept, body, etag, hosts)
        return [body]

    def _replay(self, path: str, answer: _Answer, environ: dict, start_response: Callable,
                started: float) -> Iterable[bytes]:
        rid = request_log.request_id_for(environ.get("HTTP_X_REQUEST_ID", ""))
        if answer.etag and _matches(environ.get("HTTP_IF_NONE_MATCH", ""), answer.etag):
            status, body = "304 NOT MODIFIED", b""
            headers = [(k, v) for k, v in answer.headers if k.lower() != "content-type"]
        else:
            status, body, headers = "200 OK", answer.body, list(answer.headers)
            headers.append(("Content-Length", str(len(body))))
        headers.append(("X-Request-ID", rid))
        start_response(status, headers)
        request_log.log_wsgi_answer(environ, rid, path, int(status[:3]), started)
        return [body]


def _matches(if_none_match: str, etag: str) -> bool:
    if not if_none_match:
        return False
    wanted = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in wanted or etag.removeprefix("W/") in wanted


def install(app: Flask) -> None:
    """Wrap app.wsgi_app; call before any proxy middleware wraps it, so REMOTE_ADDR and Host
    are the ones ProxyFix derived."""
    app.wsgi_app = PublicDocuments(app, app.wsgi_app)
