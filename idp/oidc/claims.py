"""Claims released per scope (the mapping lives in policies/scopes.toml); features add their own
claims (SMART fhirUser, EPCS entitlements) through idp.oidc.registry."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.util import scope_to_list

from idp.accounts.models import User
from idp.context import policy
from idp.core.i18n import offered
from idp.oidc.registry import registry


def _all_claims(user: User) -> dict[str, Any]:
    return {
        "name": user.name or user.username,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "preferred_username": user.username,
        "locale": offered(user.language),  # OIDC Core §5.1; the account's language setting
        "email": user.email,
        "email_verified": bool(user.email_verified),
        "phone_number": user.phone_number,
        "phone_number_verified": bool(user.phone_number_verified),
        "npi": user.npi,
        "license_state": user.license_state,
        "roles": roles_of(user),
        "facility": user.facility,
        "department": user.department,
    }


def roles_of(user: User) -> list[str]:
    """The account's role, unless it is clinical and suspended (license expired)."""
    role = policy().roles.get(user.role)
    if getattr(user, "clinical_suspended", False) and (role is None or role.clinical):
        return []
    return [user.role]


def user_claims(user: User, scope: str | list[str] | None) -> dict[str, Any]:
    """`sub` plus the claims the granted scopes release; empty values are left out."""
    scopes = scope if isinstance(scope, list) else (scope_to_list(scope) or [])
    allowed = policy().claims_for(scopes)
    claims: dict[str, Any] = {"sub": user.subject}
    found = _all_claims(user)
    found.update(registry().extra_claims(user, allowed))  # asked only for released names
    for name, value in found.items():
        if name in allowed and value not in (None, "", []):
            claims[name] = value
    return claims
