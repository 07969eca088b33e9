"""Local validation of the IdP's JWT access tokens (RFC 9068) with joserfc.

The IdP's JWKS comes from clients.jwks.IssuerKeys: fetched from the `jwks_uri` its discovery
document names, cached, refetched when a token names an unknown `kid` (key rotation) and after
MAX_AGE seconds (removed keys).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
from joserfc.errors import ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwt import JWTClaimsRegistry

from clients.jwks import ALGORITHMS, MAX_AGE, MIN_REFETCH, IssuerKeys, KeysUnavailable

__all__ = ["ALGORITHMS", "MAX_AGE", "MIN_REFETCH", "AccessTokenVerifier", "KeysUnavailable",
           "TokenError", "token_roles", "token_scopes"]

TYP = ("at+jwt", "application/at+jwt")
REQUIRED = ("iss", "aud", "exp", "iat", "sub", "client_id", "jti")
LEEWAY = 30         # seconds of clock skew tolerated on exp/iat/nbf
MAX_TOKEN = 8192


class TokenError(Exception):
    """The token cannot be accepted; str() is safe to show (no token data)."""


class AccessTokenVerifier(IssuerKeys):
    def __init__(self, issuer: str, audience: str,
                 http_get: Callable[..., requests.Response] = requests.get) -> None:
        super().__init__(issuer, http_get)
        self.audience = audience

    # -- tokens ------------------------------------------------------------------------------
    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, once signature, typ, iss, aud, exp and the required claims hold.
        Raises TokenError (reject: 401) or KeysUnavailable (cannot tell now: 503)."""
        if not token or len(token) > MAX_TOKEN or token.count(".") != 2:
            raise TokenError("malformed token")
        try:
            decoded = self.decode(token)
        except InvalidKeyIdError:
            raise TokenError("signed with an unknown key") from None
        except (JoseError, ValueError, TypeError) as exc:
            raise TokenError(f"signature or format invalid ({type(exc).__name__})") from None
        if str(decoded.header.get("typ", "")).lower() not in TYP:
            raise TokenError("not an access token (typ)")
        registry = JWTClaimsRegistry(
            leeway=LEEWAY, iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            **{name: {"essential": True} for name in REQUIRED if name not in ("iss", "aud")})
        try:
            registry.validate(decoded.claims)
        except ExpiredTokenError:
            raise TokenError("token expired") from None
        except JoseError as exc:
            raise TokenError(f"claim check failed: {exc.description}") from None
        return decoded.claims


def token_scopes(claims: dict[str, Any]) -> set[str]:
    scope = claims.get("scope")
    return set(scope.split()) if isinstance(scope, str) else set()


def token_roles(claims: dict[str, Any]) -> set[str]:
    roles = claims.get("roles")
    return {r for r in roles if isinstance(r, str)} if isinstance(roles, list) else set()
