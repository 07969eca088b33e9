"""Protocol endpoints. Thin: parse, call Authlib or a service, answer."""

from __future__ import annotations

import hashlib
import json

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oidc.core.errors import (
    ConsentRequiredError,
    InteractionRequiredError,
    LoginRequiredError,
)
from flask import (
    Blueprint,
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

from idp.accounts import gates
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core import request_log
from idp.epcs import service as epcs
from idp.extensions import csrf, db
from idp.mfa import flow as mfa_flow
from idp.oidc import authorize as rules
from idp.oidc import logout as logout_service
from idp.oidc import tokens
from idp.oidc.claims import user_claims
from idp.oidc.discovery import metadata
from idp.oidc.server import server
from idp.policy import Scope
from idp.sessions import service as sessions
from idp.smart import scopes as smart_scopes
from idp.smart import service as smart
from idp.smart import views as smart_views
from idp.web import public_documents

bp = Blueprint("oidc", __name__)


def _cached_json(name: str, build: callable, max_age: int, state: object = None) -> Response:
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
    from idp.context import keystore

    return _cached_json("jwks", keystore().public_jwks, 300,
                        public_documents.jwks_state(current_app))


def _error_page(error: str, description: str, status: int = 400) -> tuple[str, int]:
    return render_template("oidc/error.html", error=error, description=description), status


def _authorization_error(error: OAuth2Error) -> Response | tuple[str, int]:
    """Errors go back to the client only once its redirect_uri is known to be registered;
    before that (unknown client, bad redirect_uri) the IdP shows its own page."""
    if not error.redirect_uri:
        return _error_page(error.error, error.get_error_description() or error.error)
    params = [("error", error.error)]
    if error.description:
        params.append(("error_description", error.description))
    state = request.args.get("state")
    if state:
        params.append(("state", state))
    params.append(("iss", settings().issuer))
    return redirect(add_params_to_uri(error.redirect_uri, params))


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Response | tuple[str, int]:
    if request.method == "POST" and request.form.get("decision") is None:
        return _error_page("invalid_request", "The authorization request must use GET.")
    sso = sessions.current()
    user = sso.user if sso else None
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _authorization_error(error)
    params = grant.request.payload.data
    redirect_uri = grant.redirect_uri
    prompts = set((params.get("prompt") or "").split())
    key = rules.request_key(request.query_string.decode("latin-1"))
    markers: dict = session.get("login_markers", {})
    try:
        if epcs.requested(params) or "binding_message" in params:
            decision = _epcs_step(sso, params, key, grant, redirect_uri, markers.get(key))
            if isinstance(decision, Response):
                return decision
        else:
            decision = rules.login_decision(sso, params, markers.get(key))
        if decision.reason == "unmet":
            raise rules.AuthorizationRequestError(
                "the requested assurance (acr_values) needs a sign-in method this account "
                "has not set up", redirect_uri, "unmet_authentication_requirements")
        if decision.reason == "stepup":
            if "none" in prompts:
                raise InteractionRequiredError(redirect_uri=redirect_uri)
            mfa_flow.begin(user, request.full_path, purpose="stepup",
                           target_acr=rules.requested_acr(params))
            db.session.commit()
            return redirect(url_for("mfa.challenge"))
        if decision.required:
            if "none" in prompts:
                raise LoginRequiredError(redirect_uri=redirect_uri)
            if ("login" in prompts or decision.reason == "max_age") and key not in markers:
                markers = {**dict(list(markers.items())[-4:]), key: _now_ts()}
                session["login_markers"] = markers
            return redirect(url_for("accounts.login", next=request.full_path,
                                    login_hint=params.get("login_hint") or None))
        step = gates.pending(user)
        if step:
            if "none" in prompts:
                raise InteractionRequiredError(redirect_uri=redirect_uri)
            return redirect(url_for(step, next=request.full_path))
        client = grant.client
        scope = grant.request.scope or ""
        consenting = request.method == "POST"
        if consenting or "consent" in prompts or not (
                client.first_party or rules.has_consent(user, client, scope)):
            if "none" in prompts:
                raise ConsentRequiredError(redirect_uri=redirect_uri)
            if not consenting:
                return _consent_page(client, scope, user)
            choice = request.form.get("decision")
            if choice == "deny":
                audit.record("consent.denied", user_id=user.id, client_id=client.client_id)
                db.session.commit()
                return server.create_authorization_response(grant=grant, grant_user=None)
            if choice != "allow":
                return _error_page("invalid_request", "Choose Allow or Deny.")
            rules.remember_consent(user, client, scope)
            db.session.commit()
        if smart.needs_patient_pick(grant.request):  # SMART standalone launch
            picked = smart_views.picked_patient(key, user.subject)
            if picked is None:
                if "none" in prompts:
                    raise InteractionRequiredError(redirect_uri=redirect_uri)
                return redirect(url_for("smart.pick_patient", next=request.full_path))
            grant.request.smart_patient = picked
    except OAuth2Error as error:
        return _authorization_error(error)
    markers.pop(key, None)
    session["login_markers"] = markers
    return server.create_authorization_response(grant=grant, grant_user=user)


def _epcs_step(sso: object, params: dict, key: str, grant: object, redirect_uri: str,
               marker: float | None) -> rules.LoginDecision | Response:
    """EPCS signing (acr_values names the EPCS acr): a fresh ceremony every time, whatever
    the session holds; its result, not the session's, goes into the code (g.auth_override)."""
    if not epcs.requested(params):
        problem = epcs.binding_message_problem(params.get("binding_message"))
        if problem:
            raise rules.AuthorizationRequestError(problem, redirect_uri)
        return rules.login_decision(sso, params, marker)
    step = epcs.authorize_step(sso, params, key, grant.client.client_id, request.full_path)
    db.session.commit()
    if step.kind == "refuse":
        raise rules.AuthorizationRequestError(step.description, redirect_uri, step.error)
    if step.kind == "ceremony":
        return redirect(url_for("epcs.ceremony", ceremony_id=step.ceremony.id))
    if step.kind == "done":
        c = step.ceremony
        g.auth_override = tokens.AuthContext(sid=sso.id, auth_time=c.completed_at, acr=c.acr,
                                             amr=list(c.amr))
    return rules.LoginDecision(step.kind == "login", "epcs")


def _now_ts() -> float:
    from idp import clock

    return clock.now().timestamp()


def _consent_page(client: object, scope: str, user: User) -> str:
    scopes = [policy().scopes[s] if s in policy().scopes else
              Scope(s, smart_scopes.describe(s), (), None) for s in scope_to_list(scope) or []
              if s in policy().scopes or smart_scopes.parse(s)]
    return render_template("oidc/consent.html", client=client, scopes=scopes, user=user)


@bp.post("/token")
@csrf.exempt
def token() -> Response:
    # The grant commits the consumed code or rotated refresh token before it issues tokens;
    # keep the rows it read (client, code or token, user) loaded across that commit instead
    # of reading each again (the SQL budget test holds this path to its statement count).
    session = db.session()
    keep, session.expire_on_commit = session.expire_on_commit, False
    try:
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


def _bearer_error(status: int, error: str | None = None, description: str | None = None
                  ) -> Response:
    challenge = f'Bearer realm="{settings().issuer}"'
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
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return _bearer_error(401, "invalid_token", "expected a Bearer token")
        raw = value.strip()
    elif form_token:
        raw = form_token
    else:
        return _bearer_error(401)
    try:
        claims, record = tokens.verify_access_token(raw)
    except tokens.InvalidToken as exc:
        return _bearer_error(401, "invalid_token", str(exc))
    if "openid" not in record.scope.split():
        return _bearer_error(403, "insufficient_scope", "the token lacks the openid scope")
    user = db.session.get(User, record.user_id) if record.user_id else None
    if user is None or user.disabled:
        return _bearer_error(401, "invalid_token", "the token's user is not active")
    request_log.note(sub=user.subject, client_id=record.client_id)
    return jsonify(user_claims(user, record.scope))


@bp.route("/logout", methods=["GET", "POST"])
@csrf.exempt
def logout() -> Response | tuple[str, int] | str:
    values = request.values
    try:
        plan = logout_service.plan(
            id_token_hint=values.get("id_token_hint"), client_id=values.get("client_id"),
            post_logout_redirect_uri=values.get("post_logout_redirect_uri"),
            state=values.get("state"), sso=sessions.current())
    except logout_service.LogoutError as exc:
        return _error_page("invalid_request", str(exc))
    if plan.needs_confirmation:
        if request.method != "POST" or request.form.get("confirm") != "yes":
            return render_template("oidc/logout_confirm.html", plan=plan, values=values)
        csrf.protect()
    logout_service.end(plan, sessions.current())
    db.session.commit()
    if plan.redirect_to:
        return redirect(plan.redirect_to)
    return render_template("oidc/logged_out.html")


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    from sqlalchemy import text

    try:
        db.session.execute(text("SELECT 1"))
        from idp.context import keystore

        for alg in policy().keys.algorithms:
            keystore().signing_key(alg)
    except Exception:  # noqa: BLE001 - readiness reports any failure as not ready
        current_app.logger.warning("readiness check failed", exc_info=False)
        return jsonify(status="unavailable"), 503
    return jsonify(status="ready"), 200


