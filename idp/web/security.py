"""Security headers on every response; error pages that never leak internals."""

from __future__ import annotations

import logging

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Flask, Response, current_app, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, SecurityError

from idp.context import policy
from idp.core import bounded_json, request_log
from idp.core.i18n import gettext as _
from idp.policy import WebPolicy
from idp.web.form_action import directive

PROTOCOL_PATHS = ("/token", "/par", "/revoke", "/introspect", "/userinfo", "/register",
                  "/.well-known/", "/jwks.json", "/healthz", "/readyz", "/openapi.json")
# Public, cacheable answers (they set their own Cache-Control); every other response is
# no-store: pages of a signed-in user, token, userinfo and introspection answers, error pages.
CACHEABLE_PATHS = ("/static/", "/.well-known/", "/jwks.json", "/openapi.json")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

log = logging.getLogger("idp")


def _is_protocol() -> bool:
    return request.path.startswith(PROTOCOL_PATHS)


def add_headers(response: Response) -> Response:
    headers = response.headers
    if "Content-Security-Policy" not in headers:
        csp = CSP
        # form-action matters only in a page a browser renders: a redirect's body is never
        # shown (Werkzeug's "Redirecting..." is text/html all the same), so its policy is
        # never the one a form is checked against; no read of the clients for it.
        if response.mimetype == "text/html" and not 300 <= response.status_code < 400:
            extra = directive()
            csp = f"{CSP}; {extra}" if extra else CSP
        headers["Content-Security-Policy"] = csp
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    # same-origin, not no-referrer: Flask-WTF checks the Referer of HTTPS form posts.
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if current_app.extensions["idp"].settings.secure_cookies:
        headers.setdefault("Strict-Transport-Security",
                           f"max-age={web_policy().hsts_max_age}; includeSubDomains")
    if not request.path.startswith(CACHEABLE_PATHS) or response.status_code >= 400:
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"
    return response


def _error(status: int, code: str, message: str) -> tuple[Response | str, int]:
    if _is_protocol():
        return jsonify(error=code, error_description=message), status
    if request.path == "/authorize":
        return render_template("oidc/error.html", error=code, description=message), status
    return render_template("error.html", status=status, message=message), status


def web_policy() -> WebPolicy:
    return policy().web


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
              [value for _name, value in request.headers.items()]]
    if any("\x00" in value for group in values for value in group):
        return _error(400, "invalid_request", "A parameter holds a NUL character.")
    return _check_oauth_parameters()


def _check_oauth_parameters() -> tuple[Response | str, int] | None:
    """RFC 6749 §3.1: request parameters must not be included more than once (Authlib checks
    five of them at /authorize, none at /token); and no parameter value at the protocol
    endpoints may be longer than web.toml allows."""
    rules = web_policy()
    sources = [request.args]
    if request.method == "POST":
        sources.append(request.form)
    # Werkzeug counts multipart parts (MAX_FORM_PARTS); count url-encoded fields as well.
    if sum(len(values) for source in sources for _name, values in source.lists()) \
            > rules.max_form_parts:
        return _error(413, "invalid_request", "The request has too many fields.")
    if request.path in rules.single_value_paths:
        seen: set[str] = set()
        for source in sources:
            for name, values in source.lists():
                if len(values) > 1 or (name in seen and name != "csrf_token"):
                    return _error(400, "invalid_request",
                                  f"The parameter {name[:40]!r} is repeated: send it once.")
                seen.add(name)
    if request.path in rules.bounded_paths:
        for source in sources:
            for name, values in source.lists():
                limit = rules.long_params.get(name, rules.max_param_length)
                if len(name) > limit or any(len(value) > limit for value in values):
                    return _error(400, "invalid_request",
                                  f"A parameter is longer than {limit} characters.")
    return None


class BoundedJSONProvider(DefaultJSONProvider):
    """request.get_json() with web.toml's depth and size bounds: too deep or too wide raises
    ValueError like any malformed body (get_json(silent=True) gives None, else a 400)."""

    def loads(self, s: str | bytes, **kwargs: object) -> object:
        rules: WebPolicy = self._app.extensions["idp"].policy.web
        return bounded_json.loads(s, max_depth=rules.max_json_depth,
                                  max_values=rules.max_json_values, **kwargs)


def install(app: Flask) -> None:

    settings = app.extensions["idp"].settings
    rules: WebPolicy = app.extensions["idp"].policy.web
    app.json = BoundedJSONProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=rules.max_body_bytes,
        MAX_FORM_PARTS=rules.max_form_parts,
        TRUSTED_HOSTS=list(settings.trusted_hosts),
        # RFC 6265bis __Host- prefix under https: Secure, Path=/, no Domain; no subdomain or
        # plain-http page can set or shadow the cookie.
        SESSION_COOKIE_NAME=("__Host-" if settings.secure_cookies else "")
        + app.config["SESSION_COOKIE_NAME"],
    )
    app.after_request(add_headers)
    app.before_request(reject_unusable_input)
    request_log.install(app)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> tuple[Response | str, int]:
        return _error(400, "invalid_request",
                      _("This form has expired or was not sent from this site. "
                        "Go back, reload the page and try again."))

    @app.errorhandler(SecurityError)
    def untrusted_host(exc: SecurityError) -> tuple[Response, int]:
        # Host not in TRUSTED_HOSTS: no URL can be built (routing never bound), so no page
        # template either; a short answer that names nothing from the request.
        if _is_protocol():
            return jsonify(error="invalid_request",
                           error_description="The Host header names an unknown host."), 400
        return Response("Bad request: the Host header names an unknown host.\n",
                        mimetype="text/plain"), 400

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
        return _error(500, "server_error", _("Something went wrong on our side. Try again."))
