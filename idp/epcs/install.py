"""EPCS plugs into the OpenID provider (idp.oidc.registry): its /authorize check (the signing
ceremony), the `entitlements` claim and its endpoints; and into the MFA flow: the signing
ceremony's purpose (idp.epcs.purpose)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from idp.accounts.models import User
from idp.context import policy
from idp.core import admin_nav, events
from idp.core.i18n import lazy_gettext as _l
from idp.epcs import details, purpose, service
from idp.epcs.views import bp
from idp.oidc.auth_context import AuthContext
from idp.oidc.authorize import AuthorizationRequestError
from idp.oidc.interaction.checks import sign_in
from idp.oidc.interaction.pipeline import Check, Interaction, Outcome
from idp.oidc.registry import add_feature


def ceremony(ix: Interaction) -> Outcome | None:
    """EPCS signing (acr_values names the EPCS acr): a fresh ceremony every time, whatever
    the session holds; its result, not the session's, goes into the code. A binding_message
    without the EPCS acr must still be a well-formed prescription reference."""
    if not service.requested(ix.params):
        if "binding_message" not in ix.params:
            return None
        problem = service.binding_message_problem(ix.params.get("binding_message"))
        if problem:
            return Outcome.fail("epcs_binding_message",
                                AuthorizationRequestError(problem, ix.redirect_uri))
        return None
    step = service.authorize_step(ix.sso, ix.params, ix.key, ix.client.client_id,
                                  ix.return_to)
    return step_outcome(ix, step)  # the /authorize request commits what the step wrote


def step_outcome(ix: Interaction, step: service.Step) -> Outcome | None:
    """epcs_refused (the client's error), epcs_ceremony (the ceremony page), epcs_login (sign
    in first); a finished ceremony settles the sign-in questions with its own acr and amr."""
    if step.kind == "refuse":
        return Outcome.fail("epcs_refused", AuthorizationRequestError(
            step.description, ix.redirect_uri, step.error))
    if step.kind == "ceremony":
        return Outcome.go("epcs_ceremony", "epcs.ceremony", ceremony_id=step.ceremony.id)
    if step.kind == "login":
        return sign_in(ix, "epcs_login")
    done = step.ceremony
    assert done is not None and done.completed_at is not None  # a finished ceremony
    ix.auth = AuthContext(sid=ix.sso.id, auth_time=done.completed_at, acr=done.acr,
                          amr=list(done.amr))
    ix.login_settled = True
    ix.values[service.CEREMONY_VALUE] = done.id
    return None


def claims(user: User, allowed: set[str]) -> dict[str, Any]:
    """`entitlements` (released with the roles scope): ["epcs"] when granted."""
    return {"entitlements": service.entitlements(user)} if "entitlements" in allowed else {}


def token_claims(user: User, granted: list[str], ctx: AuthContext | None) -> dict[str, Any]:
    """The access token's `entitlements` beside its `roles` (the two-admin EPCS permission)."""
    signed = service.signature_claims(
        service.signed_for(ctx.family_id, ctx.acr) if ctx else None)
    if "roles" not in granted:
        return signed
    entitled = service.entitlements(user)
    return {**signed, "entitlements": entitled} if entitled else signed


def token_response(granted: list[str], ctx: AuthContext) -> dict[str, Any]:
    """RFC 9396 §7: the token response names the authorization_details granted."""
    found = service.signature_claims(service.signed_for(ctx.family_id, ctx.acr))
    return {"authorization_details": found["authorization_details"]} if found else {}


def install(app: Flask) -> None:
    add_feature(app, "epcs", claims=[claims], token_claims=[token_claims],
                token_response=[token_response], request_rules=[details.validate_request],
                code_binders=[service.bind_code], discovery=[details.discovery],
                checks=[Check("epcs", ceremony, before="session")])
    purpose.install(app)
    events.subscribe(app, events.ROLE_CHANGED, service.withdraw_on_role_change)
    app.register_blueprint(bp)
    admin_nav.add(app, admin_nav.NavEntry("epcs.admin_epcs", _l("EPCS"),
                                          lambda: policy().console.admin_roles, order=80))
    admin_nav.add_tile(app, admin_nav.Tile("epcs.admin_epcs",
                                           _l("EPCS permissions waiting for approval"),
                                           service.proposed_count,
                                           lambda: policy().console.admin_roles, order=60))
