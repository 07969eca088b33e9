"""Local validation of the IdP's JWT access tokens (RFC 9068) with joserfc.

The IdP's JWKS is fetched from the `jwks_uri` its discovery document names, cached, refetched
when a token names an unknown `kid` (key rotation) and after MAX_AGE seconds (removed keys).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

ALGORITHMS = ["RS256", "ES256"]
TYP = ("at+jwt", "application/at+jwt")
REQUIRED = ("iss", "aud", "exp", "iat", "sub", "client_id", "jti")
LEEWAY = 30         # seconds of clock skew tolerated on exp/iat/nbf
MAX_AGE = 600       # refetch the key set at least this often
MIN_REFETCH = 10    # an unknown kid triggers at most one refetch per this many seconds
MAX_TOKEN = 8192


class TokenError(Exception):
    """The token cannot be accepted; str() is safe to show (no token data)."""


class KeysUnavailable(Exception):
    """The IdP's key set cannot be fetched right now."""


class AccessTokenVerifier:
    def __init__(self, issuer: str, audience: str,
                 http_get: Callable[..., requests.Response] = requests.get) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self._get = http_get
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = 0.0

    # -- keys --------------------------------------------------------------------------------
    def _fetch(self) -> KeySet:
        try:
            meta = self._get(f"{self.issuer}/.well-known/openid-configuration", timeout=5)
            meta.raise_for_status()
            document = meta.json()
            if document.get("issuer") != self.issuer:
                raise KeysUnavailable("discovery names another issuer")
            response = self._get(document["jwks_uri"], timeout=5)
            response.raise_for_status()
            return KeySet.import_key_set(response.json())
        except (requests.RequestException, ValueError, KeyError, TypeError, JoseError) as exc:
            raise KeysUnavailable(type(exc).__name__) from None

    def keys(self, refresh: bool = False) -> KeySet:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = self._keys is None or age > MAX_AGE
            if stale or (refresh and age > MIN_REFETCH):
                self._keys = self._fetch()
                self._fetched_at = time.monotonic()
            assert self._keys is not None
            return self._keys

    # -- tokens ------------------------------------------------------------------------------
    def _decode(self, token: str, keys: KeySet) -> jwt.Token:
        return jwt.decode(token, keys, algorithms=ALGORITHMS)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, once signature, typ, iss, aud, exp and the required claims hold.
        Raises TokenError (reject: 401) or KeysUnavailable (cannot tell now: 503)."""
        if not token or len(token) > MAX_TOKEN or token.count(".") != 2:
            raise TokenError("malformed token")
        try:
            try:
                decoded = self._decode(token, self.keys())
            except InvalidKeyIdError:
                decoded = self._decode(token, self.keys(refresh=True))
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
