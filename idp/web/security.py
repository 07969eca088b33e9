"""Security headers on every response; error pages that never leak internals."""

from __future__ import annotations

import logging

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Flask, Response, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

PROTOCOL_PATHS = ("/token", "/revoke", "/introspect", "/userinfo", "/register",
                  "/.well-known/", "/jwks.json", "/healthz", "/readyz")
NO_STORE_PATHS = ("/token", "/revoke", "/introspect", "/userinfo", "/authorize", "/login",
                  "/logout", "/account")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

log = logging.getLogger("idp")


def _is_protocol() -> bool:
    return request.path.startswith(PROTOCOL_PATHS)


def add_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    # same-origin, not no-referrer: Flask-WTF checks the Referer of HTTPS form posts.
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.path.startswith(NO_STORE_PATHS):
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"
    return response


def _error(status: int, code: str, message: str) -> tuple[Response | str, int]:
    if _is_protocol():
        return jsonify(error=code, error_description=message), status
    return render_template("error.html", status=status, message=message), status


def reject_unusable_input() -> tuple[Response | str, int] | None:
    """before_request: refuse what no parameter may hold, once for every endpoint.

    Werkzeug decodes the raw query string strictly, so raw non-UTF-8 bytes in it raise
    UnicodeDecodeError wherever request.args is read; a NUL in a value that reaches a
    PostgreSQL query raises DataError (a header too: the User-Agent is stored). Both were 500s.
    """
    try:
        request.query_string.decode()
    except UnicodeDecodeError:
        return _error(400, "invalid_request", "The query string is not valid UTF-8.")
    values = [*request.args.listvalues(), *request.form.listvalues(),
              [value for _, value in request.headers.items()]]
    if any("\x00" in value for group in values for value in group):
        return _error(400, "invalid_request", "A parameter holds a NUL character.")
    return None


def install(app: Flask) -> None:
    app.after_request(add_headers)
    app.before_request(reject_unusable_input)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> tuple[Response | str, int]:
        return _error(400, "invalid_request",
                      "This form has expired or was not sent from this site. "
                      "Go back, reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response | str, int]:
        status = exc.code or 500
        code = {404: "not_found", 405: "invalid_request", 413: "invalid_request"}.get(
            status, "invalid_request")
        return _error(status, code, exc.description if status < 500 else "Server error")

    @app.errorhandler(OAuth2Error)
    def oauth_error(exc: OAuth2Error) -> tuple[Response | str, int]:
        # An OAuth error raised outside Authlib's own error handling, e.g. InsecureTransportError
        # from creating the OAuth request (plain http, non-loopback host): the spec's error.
        return _error(exc.status_code or 400, exc.error or "invalid_request",
                      exc.get_error_description() or "The request was refused.")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response | str, int]:
        # Log the type and where, never the request data (it may hold passwords or codes).
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.path,
                  exc_info=app.debug)
        return _error(500, "server_error", "Something went wrong on our side. Try again.")
