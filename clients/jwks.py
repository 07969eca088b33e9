"""The IdP's signing keys as the relying parties see them: the JWKS its discovery document names,
fetched once, cached, refetched when a token names an unknown `kid` (key rotation; at most once
per MIN_REFETCH seconds, so forged kids cannot cause a refetch storm) and after MAX_AGE seconds
(keys the IdP removed). Shared by the EHR's access-token checks and both RPs' logout tokens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

ALGORITHMS = ["RS256", "ES256"]  # what the IdP signs with; never "none", never HMAC
MAX_AGE = 600       # refetch the key set at least this often
MIN_REFETCH = 10    # an unknown kid triggers at most one refetch per this many seconds


class KeysUnavailable(Exception):
    """The IdP's key set cannot be fetched right now."""


class IssuerKeys:
    """The key set of one issuer, cached per process (each gunicorn worker has its own)."""

    def __init__(self, issuer: str,
                 http_get: Callable[..., requests.Response] = requests.get) -> None:
        self.issuer = issuer.rstrip("/")
        self._get = http_get
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = 0.0

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

    def decode(self, token: str) -> jwt.Token:
        """Signature checked with the issuer's keys (refetched once for an unknown kid).
        Raises InvalidKeyIdError (unknown key), another JoseError / ValueError / TypeError
        (bad signature or format) or KeysUnavailable."""
        try:
            return jwt.decode(token, self.keys(), algorithms=ALGORITHMS)
        except InvalidKeyIdError:
            return jwt.decode(token, self.keys(refresh=True), algorithms=ALGORITHMS)
