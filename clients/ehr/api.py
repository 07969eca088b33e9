"""The EHR's JSON API: a resource server accepting the IdP's JWT access tokens (Bearer, and
DPoP-bound ones only with the DPoP scheme and a proof by their key: clients.ehr.dpop).

401 + `WWW-Authenticate: Bearer error="invalid_token"` for a token that fails validation,
401 without an error code when no token is sent (RFC 6750 §3.1), 403 `insufficient_scope`
when the token lacks the endpoint's scope or the user's role does not allow it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from clients.ehr import data, dpop
from clients.ehr.scopes import RULES, Rule
from clients.ehr.tokens import (
    AccessTokenVerifier,
    KeysUnavailable,
    TokenError,
    token_roles,
    token_scopes,
)

bp = Blueprint("api", __name__, url_prefix="/api")
REALM = "ehr"


def verifier() -> AccessTokenVerifier:
    return current_app.extensions["ehr.verifier"]


def denial(claims: dict[str, Any], rule: Rule) -> str | None:
    """Why these claims may not use an endpoint with this rule; None when they may."""
    if rule.scope not in token_scopes(claims):
        return f"the token lacks the {rule.scope} scope"
    if rule.roles is not None and not rule.roles & token_roles(claims):
        return "the user's role does not allow this"
    return None


def _challenge(status: int, error: str | None = None, description: str | None = None,
               scope: str | None = None, scheme: str = "Bearer") -> Response:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    if scope:
        parts.append(f'scope="{scope}"')
    response = jsonify({"error": error, "error_description": description} if error else
                       {"error": "unauthorized"})
    response.status_code = status
    response.headers["WWW-Authenticate"] = f"{scheme} " + ", ".join(parts)
    if scheme == "DPoP":
        response.headers["WWW-Authenticate"] += f', algs="{" ".join(dpop.ALGORITHMS)}"'

    return response


def protected(name: str) -> Callable:
    """Require a valid access token meeting RULES[name]; the claims go to g.token_claims."""
    rule = RULES[name]

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            scheme = scheme.lower()
            if scheme not in ("bearer", "dpop"):
                return _challenge(401)
            try:
                claims = verifier().verify(value.strip())
            except TokenError as exc:
                return _challenge(401, "invalid_token", str(exc))
            except KeysUnavailable:
                response = jsonify(error="temporarily_unavailable",
                                   error_description="cannot check tokens right now")
                response.status_code = 503
                response.headers["Retry-After"] = "5"
                return response
            refusal = _proof_refusal(scheme, value.strip(), claims)
            if refusal is not None:
                return refusal
            reason = denial(claims, rule)
            if reason:
                return _challenge(403, "insufficient_scope", reason, rule.scope)
            g.token_claims = claims
            return view(*args, **kwargs)
        return wrapper
    return decorator


def _proof_refusal(scheme: str, token: str, claims: dict[str, Any]) -> Response | None:
    """RFC 9449 §7.1: a DPoP-bound token needs the DPoP scheme and a valid proof by its key;
    a bearer token is not accepted under the DPoP scheme."""
    jkt = dpop.bound_key(claims)
    if jkt is None:
        if scheme == "dpop":
            return _challenge(401, "invalid_token", "the token is not DPoP-bound",
                              scheme="DPoP")
        return None
    if scheme != "dpop":
        return _challenge(401, "invalid_token", "a DPoP-bound token needs the DPoP scheme "
                          "and a proof", scheme="DPoP")
    proofs = request.headers.getlist("DPoP")
    try:
        # htu: the EHR's public URL (EHR_URL), as clients name it behind any proxy
        dpop.verify(proofs[0] if len(proofs) == 1 else None, method=request.method,
                    url=current_app.extensions["rp"].base_url + request.path, token=token,
                    jkt=jkt)
    except dpop.KeyMismatch as exc:
        return _challenge(401, "invalid_token", str(exc), scheme="DPoP")
    except dpop.ProofError as exc:
        return _challenge(401, "invalid_dpop_proof", str(exc), scheme="DPoP")
    return None


@bp.get("/patients")
@protected("patients")
def patients() -> Response:
    return jsonify(items=data.patients())


@bp.get("/appointments")
@protected("appointments")
def appointments() -> Response:
    return jsonify(items=data.appointments())


@bp.get("/labs")
@protected("labs")
def labs() -> Response:
    status = request.args.get("status")
    return jsonify(items=data.labs(status if status in ("pending", "final") else None))


@bp.get("/messages")
@protected("messages")
def messages() -> Response:
    return jsonify(items=data.messages())


@bp.get("/billing")
@protected("billing")
def billing() -> Response:
    return jsonify(items=data.billing())
