"""SMART App Launch plugs into the OpenID provider: its scopes, claims, audiences, token
context, request rules, code binding, /authorize check and endpoints (idp.oidc.registry).
create_app calls install() only when policies/smart.toml has `enabled = true` (policy().smart)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from idp.accounts.models import User
from idp.core import events
from idp.oidc.auth_context import AuthContext
from idp.oidc.registry import ScopeFamily, add_feature
from idp.smart import practitioners, scopes, service
from idp.smart.interaction import CHECK
from idp.smart.views import bp

CLINICAL = ScopeFamily(recognizes=lambda scope: scopes.parse(scope) is not None,
                       covered=scopes.covered, describe=scopes.describe)


def claims(user: User, allowed: set[str]) -> dict[str, Any]:
    """fhirUser (scope fhirUser): the user's Practitioner resource, as the FHIR server named
    it (idp.smart.practitioners); no claim while it is not resolved."""
    if "fhirUser" not in allowed:
        return {}
    url = practitioners.fhir_user(user)
    return {"fhirUser": url} if url else {}


def token_claims(user: User, granted: list[str], ctx: AuthContext | None) -> dict[str, Any]:
    """The launch context in the access token (the FHIR server's patient check)."""
    if ctx is None or not service.wants_context(granted):
        return {}
    return service.token_context(ctx.family_id)


def token_response(granted: list[str], ctx: AuthContext) -> dict[str, Any]:
    """`patient`, `encounter` (and banner, style) beside the tokens of a launch."""
    if not service.wants_context(granted):
        return {}
    return service.token_response_context(ctx.family_id)


def install(app: Flask) -> None:
    add_feature(app, "smart", claims=[claims], audiences=[service.audiences],
                token_claims=[token_claims], token_response=[token_response],
                request_rules=[service.validate_request], code_binders=[service.bind_code],
                scope_families=[CLINICAL], checks=[CHECK])
    events.subscribe(app, events.ACCOUNT_APPROVED, practitioners.on_account_approved)
    app.register_blueprint(bp)
