"""DPoP proofs (RFC 9449 §7) at the EHR's API: a token bound to a key (`cnf.jkt`) is accepted
only with the DPoP scheme and a fresh proof signed by that key for this request.

Checks: typ dpop+jwt; an asymmetric alg; a public jwk in the header verifying the signature;
its thumbprint equal to the token's cnf.jkt; htm and htu (scheme and host case-insensitive,
default port dropped, no query or fragment) this request's; iat within WINDOW seconds; ath the
hash of the token; jti not seen within the window (kept in this process: each EHR worker has
its own cache, as for the IdP's keys).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

ALGORITHMS = ("ES256", "PS256", "RS256")
WINDOW = 60
MAX_PROOF = 4096
_PRIVATE = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_REGISTRY = jws.JWSRegistry()
_REGISTRY.max_header_length = 2048  # the header holds the public key


class ProofError(Exception):
    """The proof cannot be accepted; str() is safe to show."""


class KeyMismatch(ProofError):
    """A valid proof by another key than the token's (invalid_token: the token is not
    usable by this sender)."""


class _SeenJtis:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}

    def first_use(self, key: str, now: float) -> bool:
        with self._lock:
            if len(self._seen) > 10000:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
            if self._seen.get(key, 0) > now:
                return False
            self._seen[key] = now + 2 * WINDOW + 1
            return True


_SEEN = _SeenJtis()


def bound_key(claims: dict[str, Any]) -> str | None:
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) and jkt else None


def normal_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", "", ""))


def verify(proof: str | None, *, method: str, url: str, token: str, jkt: str) -> None:
    """Raise ProofError unless `proof` is a valid proof by key `jkt` for this request."""
    if not proof or len(proof) > MAX_PROOF or proof.count(".") != 2:
        raise ProofError("a DPoP proof is required")
    try:
        header = jws.extract_compact(proof.encode(), registry=_REGISTRY).headers()
    except (JoseError, ValueError, TypeError):
        raise ProofError("malformed DPoP proof") from None
    alg, key_data = header.get("alg"), header.get("jwk")
    if str(header.get("typ", "")).lower() != "dpop+jwt" or alg not in ALGORITHMS:
        raise ProofError("not a DPoP proof (typ, alg)")
    if not isinstance(key_data, dict) or _PRIVATE & set(key_data):
        raise ProofError("the proof's jwk must be a public key")
    try:
        key = JWKRegistry.import_key(key_data)
        claims = jwt.decode(proof, key, algorithms=[alg], registry=_REGISTRY).claims
        thumbprint = key.thumbprint()
    except (JoseError, ValueError, TypeError, KeyError):
        raise ProofError("DPoP proof signature invalid") from None
    if not hmac.compare_digest(thumbprint, jkt):
        raise KeyMismatch("the proof's key is not the token's")
    if claims.get("htm") != method or normal_url(str(claims.get("htu", ""))) != normal_url(url):
        raise ProofError("the proof is for another request (htm, htu)")
    iat = claims.get("iat")
    now = time.time()
    if not isinstance(iat, int) or abs(now - iat) > WINDOW:
        raise ProofError("the proof's iat is outside the window")
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=")
    if not hmac.compare_digest(str(claims.get("ath", "")).encode(), ath):
        raise ProofError("the proof's ath is not this token's")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or not _SEEN.first_use(f"{jkt}:{jti}", now):
        raise ProofError("the proof was used before (jti)")
