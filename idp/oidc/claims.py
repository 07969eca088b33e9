"""Claims released per scope (the mapping lives in policies/scopes.toml)."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.util import scope_to_list

from idp.accounts.models import User
from idp.context import policy


def _all_claims(user: User) -> dict[str, Any]:
    return {
        "name": user.name or user.username,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "preferred_username": user.username,
        "email": user.email,
        "email_verified": bool(user.email_verified),
        "phone_number": user.phone_number,
        "phone_number_verified": bool(user.phone_number_verified),
        "npi": user.npi,
        "license_state": user.license_state,
        "roles": roles_of(user),
        "facility": user.facility,
        "department": user.department,
        "fhirUser": _fhir_user(user),  # SMART App Launch
    }


def roles_of(user: User) -> list[str]:
    """The account's role, unless it is clinical and suspended (license expired)."""
    role = policy().roles.get(user.role)
    if getattr(user, "clinical_suspended", False) and (role is None or role.clinical):
        return []
    return [user.role]


def _fhir_user(user: User) -> str | None:
    from idp.smart.service import fhir_user

    return fhir_user(user)


def user_claims(user: User, scope: str | list[str] | None) -> dict[str, Any]:
    """`sub` plus the claims the granted scopes release; empty values are left out."""
    scopes = scope if isinstance(scope, list) else (scope_to_list(scope) or [])
    allowed = policy().claims_for(scopes)
    claims: dict[str, Any] = {"sub": user.subject}
    for name, value in _all_claims(user).items():
        if name in allowed and value not in (None, "", []):
            claims[name] = value
    if "entitlements" in allowed:  # a query: only when a granted scope releases it
        from idp.epcs.service import entitlements

        granted = entitlements(user)
        if granted:
            claims["entitlements"] = granted
    return claims
