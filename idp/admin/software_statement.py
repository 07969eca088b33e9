"""RFC 7591 §2.3 software statements at /register: a JWT, signed by a software publisher the
operator trusts, asserting client metadata. Trusted publishers come from configuration
(IDP_SOFTWARE_STATEMENT_ISSUERS: a JSON file {"<iss>": <public JWK set>, ...}). A statement
from an unknown publisher, with a bad signature, expired or not yet valid is refused
(`invalid_software_statement`); an accepted statement's values take precedence over the same
fields sent in plain JSON (§2.3), and it is returned unmodified in the registration response.
"""

from __future__ import annotations

from typing import Any

from idp.context import settings
from idp.core.trusted_publishers import load_issuers
from idp.keys import jwt

__all__ = ["FIELDS", "StatementError", "load_issuers", "verify"]

# Metadata a statement may assert (everything else it carries is ignored).
FIELDS = ("client_name", "redirect_uris", "post_logout_redirect_uris", "backchannel_logout_uri",
          "grant_types", "response_types", "scope", "token_endpoint_auth_method", "jwks",
          "software_id", "software_version")


class StatementError(ValueError):
    """The statement cannot be accepted; the message says why (safe to return)."""


def verify(statement: Any) -> tuple[str, dict[str, Any]]:
    """(issuer, the metadata it asserts) of an acceptable statement, or StatementError."""
    path = settings().software_statement_issuers
    if path is None:
        raise StatementError("software statements are not accepted by this server")
    if not isinstance(statement, str) or len(statement) > jwt.MAX_STATEMENT_LENGTH:
        raise StatementError("software_statement must be a signed JWT")
    try:
        unverified = jwt.unverified_claims(statement, jwt.Kind.SOFTWARE_STATEMENT)
    except jwt.InvalidJWT:
        raise StatementError("software_statement is not a signed JWT") from None
    issuer = unverified.get("iss")
    keys = load_issuers(path).get(issuer) if isinstance(issuer, str) else None
    if keys is None:
        raise StatementError("the software statement's issuer is not trusted")
    try:  # the publisher's keys; none of our own token kinds passes (idp.keys.jwt)
        claims = jwt.verify(statement, jwt.Kind.SOFTWARE_STATEMENT, keys=keys,
                            issuer=issuer).claims
    except jwt.InvalidJWT:
        raise StatementError("the software statement's signature or validity is not "
                             "acceptable") from None
    return issuer, {k: v for k, v in claims.items() if k in FIELDS}
