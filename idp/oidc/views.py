"""Protocol endpoints. Thin: parse, call Authlib or a service, answer."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.ctx import RequestContext
from werkzeug.wrappers import Response as BaseResponse

from idp.audit import group_commit
from idp.context import keystore, policy, settings
from idp.core import logout_offers, logout_relays, request_log
from idp.extensions import csrf, db
from idp.oidc import dpop, par_endpoint, revocation_cache, tokens
from idp.oidc import logout as logout_service
from idp.oidc.claims import user_claims
from idp.oidc.discovery import metadata
from idp.oidc.interaction import respond as interaction
from idp.oidc.interaction.respond import error_page
from idp.oidc.server import server
from idp.sessions import service as sessions
from idp.web import public_documents
from idp.web.security import reject_unusable_input

bp = Blueprint("oidc", __name__)


def _cached_json(name: str, build: Callable[[], Any], max_age: int, state: object = None
                 ) -> Response:
    """JSON built once per application and `state` (the published keys), with an ETag for
    conditional GETs."""
    cache = current_app.extensions.setdefault("idp_json_cache", {})
    hit = cache.get(name)
    if hit is None or hit[0] != state:
        body = json.dumps(build(), sort_keys=True, separators=(",", ":"))
        hit = cache[name] = (state, body, hashlib.sha256(body.encode()).hexdigest()[:32])
    _, body, etag = hit
    response = Response(body, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response.make_conditional(request)


@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    return _cached_json("discovery", metadata, 3600,
                        public_documents.discovery_state(current_app))


@bp.get("/jwks.json")
def jwks() -> Response:

    return _cached_json("jwks", keystore().public_jwks, 300,
                        public_documents.jwks_state(current_app))


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Response | tuple[str, int] | str:
    """Authorization endpoint: the checks of idp.oidc.interaction decide."""
    if request.method == "POST" and request.form.get("decision") is None:
        return error_page("invalid_request", "The authorization request must use GET.")
    return interaction.authorize()


def authorize_after_sign_in(next_url: str) -> Response | tuple[str, int] | str | None:
    """The authorization request a sign-in was for, answered by the sign-in's last response
    (the second factor's POST) instead of a redirect to /authorize that would only lead on:
    the code goes to the client (or the browser to the page owed next) one round trip sooner.
    `next_url` is the sign-in's same-site `next` (safe_next); anything but an /authorize
    request, or an outcome that shows a page of ours (consent, an error), gives None and the
    caller redirects to `next_url` as before. The request is the one /authorize would have
    received (GET, that query, this browser's cookies, remote address and flow session), run
    through the same checks as a GET of /authorize (idp.web.security's parameter checks, the
    interaction pipeline with its gates)."""
    parts = urlsplit(next_url)
    if parts.scheme or parts.netloc or parts.path != url_for("oidc.authorize"):
        return None
    environ = dict(request.environ)
    environ.update({"REQUEST_METHOD": "GET", "PATH_INFO": parts.path,
                    "QUERY_STRING": parts.query, "CONTENT_LENGTH": "0", "CONTENT_TYPE": "",
                    "wsgi.input": io.BytesIO(), "werkzeug.request": None})
    with RequestContext(current_app._get_current_object(), environ,  # type: ignore[attr-defined]
                        session=session._get_current_object()):  # type: ignore[attr-defined]
        if request.endpoint != "oidc.authorize" or reject_unusable_input() is not None:
            return None
        return interaction.authorize_or_none(leaving_only=True)


@bp.post("/par")
@csrf.exempt
def pushed_authorization_request() -> Response:
    """RFC 9126 pushed authorization requests (idp.oidc.par_endpoint)."""
    return par_endpoint.push()


GROUP_COMMITTED = frozenset({"client_credentials", "refresh_token"})


@bp.post("/token")
@csrf.exempt
def token() -> Response:
    # The grant commits the consumed code or rotated refresh token before it issues tokens;
    # keep the rows it read (client, code or token, user) loaded across that commit instead
    # of reading each again (the SQL budget test holds this path to its statement count).
    session = db.session()
    keep, session.expire_on_commit = session.expire_on_commit, False
    try:
        # The grants whose writes are only the new tokens and their audit event go through
        # the group committer (idp.audit.group_commit), when it is on.
        with group_commit.staged(request.form.get("grant_type") in GROUP_COMMITTED):
            response = server.create_token_response()
        if response.status_code != 200:
            # A refused request changes nothing it has not committed on purpose (a reused
            # refresh token's family revocation, a replayed code's revocation): e.g. a
            # refresh claimed before its scope was refused stays usable.
            session.rollback()
        return response
    finally:
        session.expire_on_commit = keep


@bp.post("/revoke")
@csrf.exempt
def revoke() -> Response:
    return server.create_endpoint_response("revocation")


@bp.post("/introspect")
@csrf.exempt
def introspect() -> Response:
    return server.create_endpoint_response("introspection")


def _bearer_error(status: int, error: str | None = None, description: str | None = None,
                  scheme: str = "Bearer") -> Response:
    challenge = f'{scheme} realm="{settings().issuer}"'
    if error:
        challenge += f', error="{error}"'
    if description:
        challenge += f', error_description="{description}"'
    body = {"error": error, "error_description": description} if error else {}
    response = jsonify(body)
    response.status_code = status
    response.headers["WWW-Authenticate"] = challenge
    return response


@bp.route("/userinfo", methods=["GET", "POST"])
@csrf.exempt
def userinfo() -> Response:
    header = request.headers.get("Authorization", "")
    form_token = request.form.get("access_token") if request.method == "POST" else None
    if header and form_token:
        return _bearer_error(400, "invalid_request", "more than one way of sending the token")
    scheme = "bearer"
    if header:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme not in ("bearer", "dpop") or not value.strip():
            return _bearer_error(401, "invalid_token", "expected a Bearer or DPoP token")
        raw = value.strip()
    elif form_token:
        raw = form_token
    else:
        return _bearer_error(401)
    try:
        claims, record = tokens.verify_access_token(raw, with_user=False)
    except tokens.InvalidToken as exc:
        return _bearer_error(401, "invalid_token", str(exc))
    try:  # RFC 9449 §7: a DPoP-bound token only with a proof by its key
        dpop.check_resource_request(request.headers, method=request.method,
                                    url=dpop.endpoint_url("/userinfo"), scheme=scheme,
                                    token=raw, claims=claims)
    except dpop.ResourceRefused as exc:
        response = _bearer_error(401, exc.error, exc.description, scheme="DPoP")
        if exc.nonce:
            response.headers[dpop.NONCE_HEADER] = dpop.new_nonce()
        return response
    if "openid" not in record.scope.split():
        return _bearer_error(403, "insufficient_scope", "the token lacks the openid scope")
    # The account's claims: from the node-local cache while the revocation epoch holds
    # (idp.oidc.revocation_cache), else one read of the account.
    active, info = revocation_cache.user_info(record.user_id, record.scope, lambda user:
                                              user_claims(user, record.scope),
                                              claims.get("sub")) \
        if record.user_id else (False, None)
    if not active or info is None:
        return _bearer_error(401, "invalid_token", "the token's user is not active")
    request_log.note(sub=info["sub"], client_id=record.client_id)
    return jsonify(info)


@bp.route("/logout", methods=["GET", "POST"])
@csrf.exempt
def logout() -> Response | BaseResponse | tuple[str, int] | str:
    values = request.values
    try:
        plan = logout_service.plan(
            id_token_hint=values.get("id_token_hint"), client_id=values.get("client_id"),
            post_logout_redirect_uri=values.get("post_logout_redirect_uri"),
            state=values.get("state"), sso=sessions.current())
    except logout_service.LogoutError as exc:
        return error_page("invalid_request", str(exc))
    if plan.needs_confirmation:
        if request.method != "POST" or request.form.get("confirm") != "yes":
            return render_template("oidc/logout_confirm.html", plan=plan, values=values)
        csrf.protect()
    sso = sessions.current()
    # Signed in through an upstream identity provider: offer to sign out there too, then go
    # on to the relying party (idp.core.logout_offers).
    offers = logout_offers.collect(sso.id) if sso is not None else []
    logout_service.end(plan, sso)
    # Participants that hear of it only through this browser (front-channel logout: SAML SPs
    # without a SOAP endpoint) come first, then the same end (idp.core.logout_relays).
    stop = logout_relays.first_stop(sso.id, plan.redirect_to) if sso is not None else None
    db.session.commit()
    if stop and request.method == "POST":  # after the confirmation form: see the template
        return render_template("oidc/logout_continue.html", next_url=stop)
    if stop:
        return redirect(stop)
    return logout_relays.signed_out_page(offers, plan.redirect_to)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    from sqlalchemy import text

    try:
        db.session.execute(text("SELECT 1"))

        for alg in policy().keys.algorithms:
            keystore().signing_key(alg)
    except Exception:  # noqa: BLE001 - readiness reports any failure as not ready
        current_app.logger.warning("readiness check failed", exc_info=False)
        return jsonify(status="unavailable"), 503
    return jsonify(status="ready"), 200


