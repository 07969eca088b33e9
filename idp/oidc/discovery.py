"""The discovery document: every value here is something the provider really does."""

from __future__ import annotations

from idp.context import policy, settings
from idp.keys import jwt
from idp.oidc import response_mode
from idp.oidc.clients import AUTH_METHODS, GRANT_TYPES
from idp.oidc.registry import registry
from idp.policy import Policy

ALL_AUTH_METHODS = list(AUTH_METHODS)


def metadata() -> dict:
    issuer = settings().issuer
    pol = policy()
    scopes = registry().supported_scopes(pol)  # without those of features not installed
    claims = sorted({"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr",
                     "sid", "azp", "at_hash"} | pol.claims_for(list(scopes)))
    document = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks.json",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "end_session_endpoint": f"{issuer}/logout",
        "device_authorization_endpoint": f"{issuer}/device_authorization",
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "registration_endpoint": f"{issuer}/register",
        "scopes_supported": sorted(scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": list(response_mode.MODES),
        "grant_types_supported": list(GRANT_TYPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(pol.keys.algorithms),
        "userinfo_signing_alg_values_supported": [],
        "token_endpoint_auth_methods_supported": ALL_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": list(jwt.ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": ALL_AUTH_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": list(jwt.ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": [
            m for m in ALL_AUTH_METHODS if m != "none"],
        "introspection_endpoint_auth_signing_alg_values_supported": list(jwt.ALGORITHMS),
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": claims,
        "acr_values_supported": list(pol.assurance.acr_values),
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_parameter_supported": False,
        # RFC 9101 request objects by value (and pushed); by reference only the request_uri
        # the PAR endpoint issues (never a URL fetched: request_uri_parameter_supported false).
        "request_parameter_supported": True,
        "request_object_signing_alg_values_supported": list(jwt.ALGORITHMS),
        "request_uri_parameter_supported": False,
        "require_request_uri_registration": False,
        "pushed_authorization_request_endpoint": f"{issuer}/par",
        "require_pushed_authorization_requests": pol.fapi.par.require_for_all,
        "dpop_signing_alg_values_supported": list(pol.fapi.dpop.algorithms),
        "authorization_response_iss_parameter_supported": True,
        "claim_types_supported": ["normal"],
        "ui_locales_supported": list(pol.web.locales),
        # Not registered metadata: which refresh tokens this provider issues to a client
        # registered for refresh_token (docs/refresh-tokens.md).
        "refresh_token_kinds_supported": refresh_kinds(pol),
    }
    for source in registry().discovery:  # the installed features' members
        document.update(source())
    return document


def refresh_kinds(pol: Policy) -> dict[str, str]:
    """offline_access gives an offline token; without it, a token bound to the SSO session
    (policies/refresh.toml session_bound)."""
    kinds = {"offline_access": "offline"}
    if pol.refresh.session_bound:
        kinds["default"] = "session_bound"
    return kinds
