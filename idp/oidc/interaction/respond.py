"""/authorize over HTTP: the Flask request made into an Interaction, the pipeline run, and its
Outcome answered (a redirect, a page, the client's error or the authorization response).

The request's boundary: the checks and the answer only write (a remembered consent, an EPCS
ceremony, a step-up attempt, a denial's audit event); authorize() commits once, after the
answer. The one commit inside is Authlib's code storage (idp.oidc.server
save_authorization_code), which stores the code before the redirect that carries it. A check
that refuses by raising changes nothing."""

from __future__ import annotations

from typing import cast

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.util import scope_to_list
from flask import Response, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from idp import clock
from idp.accounts import gates
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy, settings
from idp.extensions import db
from idp.mfa import flow as mfa_flow
from idp.oidc import authorize as rules
from idp.oidc import par, response_mode
from idp.oidc.interaction import pipeline
from idp.oidc.interaction.checks import BUILTIN
from idp.oidc.interaction.pipeline import Interaction, Outcome, Services
from idp.oidc.models import Client
from idp.oidc.registry import registry
from idp.oidc.server import carry, server
from idp.policy import Scope
from idp.sessions import service as sessions

MARKERS = "login_markers"  # flow-session key: request key -> when its sign-in was asked for
Answer = Response | tuple[str, int] | str


SERVICES = Services(pending_gate=gates.pending, has_consent=rules.has_consent,
                    achievable_acr=mfa_flow.achievable_acr, remember_consent=rules.remember_consent)


def error_page(error: str, description: str, status: int = 400) -> tuple[str, int]:
    return render_template("oidc/error.html", error=error, description=description), status


def authorization_error(error: OAuth2Error, state: str | None = None) -> Answer:
    """Errors go back to the client only once its redirect_uri is known to be registered;
    before that (unknown client, bad redirect_uri, a bad request_uri) the IdP shows its own
    page. `state`: the request's (a pushed request's is not in the query)."""
    if not error.redirect_uri:
        return error_page(error.error, error.get_error_description() or error.error)
    params = [("error", error.error)]
    if error.description:
        params.append(("error_description", error.description))
    state = state or error.state or request.args.get("state")
    if state:
        params.append(("state", state))
    params.append(("iss", settings().issuer))
    return response_mode.deliver(redirect(add_params_to_uri(error.redirect_uri, params)),
                                 _mode(), error.redirect_uri)


def _mode() -> str:
    return response_mode.asked(request.args.getlist("response_mode"))


def _deliver(ix: Interaction, response: Response) -> Response:
    """The authorization response in the mode the request asked for (a pushed request's
    parameters are in the grant's payload, not in the query)."""
    mode = response_mode.asked(list(ix.grant.request.payload.datalist.get("response_mode", [])))
    return cast(Response, response_mode.deliver(response, mode, ix.grant.redirect_uri))


def checks() -> list[pipeline.Check]:
    """The built-in checks with the installed features' checks in their places."""
    return pipeline.arrange(BUILTIN, registry().checks)


# Outcomes a sign-in's last step may answer itself (authorize(leaving_only=True)): the
# authorization response to the client, or the one page of ours the request needs next.
LEAVING = frozenset({pipeline.ISSUE, pipeline.REDIRECT})


def authorize() -> Answer:
    """GET (or the consent form's POST to) /authorize."""
    answer = authorize_or_none(leaving_only=False)
    return answer if answer is not None else error_page("server_error", "No answer.", 500)


def authorize_or_none(*, leaving_only: bool) -> Answer | None:
    """/authorize's answer. leaving_only: answered at the end of a sign-in (idp.oidc.views
    authorize_after_sign_in), where a redirect back to /authorize would only lead on: the
    answer when the outcome is the authorization response (or a redirect to the page owed
    next), else None with nothing written, and the browser comes to /authorize as before (a
    consent page, a refusal, an error page are shown at /authorize)."""
    sso = sessions.current()
    try:
        grant = server.get_consent_grant(end_user=sso.user if sso else None)
    except OAuth2Error as error:
        return None if leaving_only else authorization_error(error)
    key = rules.request_key(request.query_string.decode("latin-1"))
    markers: dict = session.get(MARKERS, {})
    ix = Interaction(
        grant=grant, sso=sso, params=grant.request.payload.data, key=key,
        return_to=request.full_path, now=clock.now().timestamp(),
        assurance=policy().assurance, services=SERVICES, marker=markers.get(key),
        decision=request.form.get("decision") if request.method == "POST" else None)
    try:
        outcome = pipeline.run(ix, checks())
    except OAuth2Error as error:  # a feature's check may refuse by raising
        if leaving_only:
            db.session.rollback()
            return None
        return authorization_error(error, ix.params.get("state"))
    if leaving_only and outcome.kind not in LEAVING:
        db.session.rollback()
        return None
    answer = respond(ix, outcome, markers)
    db.session.commit()
    return answer


def respond(ix: Interaction, outcome: Outcome, markers: dict) -> Answer:
    kind = outcome.kind
    if kind == pipeline.ERROR:
        return authorization_error(outcome.error, ix.params.get("state"))
    if kind == pipeline.PAGE:
        return error_page("invalid_request", outcome.description or "")
    step = browser_step(ix, outcome, markers)
    if step is not None:
        return step
    if kind == pipeline.CONSENT:
        return consent_page(ix.client, ix.scope, ix.user)
    if not par.consume(ix.grant.request):  # a pushed request answers once
        return error_page("invalid_request_uri", "request_uri: used already")
    if kind == pipeline.DENY:
        audit.record("consent.denied", user_id=ix.user.id, client_id=ix.client.client_id)
        return _deliver(ix, server.create_authorization_response(
            ix.grant.request, grant=ix.grant, grant_user=None))
    markers.pop(ix.key, None)
    session[MARKERS] = markers
    carry(ix.grant.request, outcome.auth, dict(outcome.values))
    return _deliver(ix, server.create_authorization_response(
        ix.grant.request, grant=ix.grant, grant_user=ix.user))


def browser_step(ix: Interaction, outcome: Outcome, markers: dict) -> BaseResponse | None:
    """What the browser must do first for this outcome (sign in, step up, a gate's page), or
    None when the outcome is not such a step. Shared with the other sign-in protocols (the
    SAML IdP runs the same checks: idp.oidc.interaction.checks SIGN_IN) so that each comes
    back to its own `return_to` once the step is done."""
    kind = outcome.kind
    if kind == pipeline.LOGIN:
        if outcome.mark and ix.key not in markers:
            session[MARKERS] = {**dict(list(markers.items())[-4:]), ix.key: ix.now}
        return redirect(url_for("accounts.login", next=ix.return_to,
                                login_hint=ix.params.get("login_hint") or None))
    if kind == pipeline.STEP_UP:
        mfa_flow.begin(ix.user, ix.return_to, purpose="stepup", target_acr=outcome.acr)
        return redirect(url_for("mfa.challenge"))
    if kind == pipeline.REDIRECT:
        return redirect(outcome.url or url_for(outcome.endpoint, **outcome.args))
    return None


def consent_page(client: Client, scope: str, user: User | None) -> str:
    return render_template("oidc/consent.html", client=client,
                           scopes=consent_page_scopes(scope), user=user)


def consent_page_scopes(scope: str) -> list[Scope]:
    """The scopes as a consent page lists them: the policy's, and features' open scope
    families (SMART clinical scopes) in a sentence."""
    pol, reg = policy(), registry()
    supported = reg.supported_scopes(pol)
    shown = []
    for name in scope_to_list(scope) or []:
        if name in supported:
            shown.append(pol.scopes[name])
        elif (text := reg.describe(name)) is not None:
            shown.append(Scope(name, text, (), None))
    return shown
