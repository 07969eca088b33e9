"""Test side of PAR, request objects, private_key_jwt and DPoP: what a FAPI 2.0 client does,
written here with joserfc (the IdP's own code is not used to make what it must verify)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from tests.helpers import REDIRECT, Rp, make_client, pkce
from tests.log_scan import register as register_secret

ISSUER = "http://idp.test"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class KeyedRp(Rp):
    """A private_key_jwt client and the private key of its registered JWKS."""

    key: Any = None
    kid: str = "k1"
    dpop_key: Any = field(default_factory=lambda: ECKey.generate_key("P-256", private=True))


def new_key() -> ECKey:
    return ECKey.generate_key("P-256", private=True)


def make_keyed_client(**kwargs) -> KeyedRp:
    key = new_key()
    public = {**key.as_dict(private=False), "kid": "k1", "use": "sig", "alg": "ES256"}
    rp = make_client(auth_method="private_key_jwt", jwks={"keys": [public]}, **kwargs)
    return KeyedRp(rp.client_id, None, rp.redirect_uri, key=key)


def assertion(rp: KeyedRp, aud: str = ISSUER) -> str:
    now = int(time.time())
    return jwt.encode({"alg": "ES256", "kid": rp.kid}, {
        "iss": rp.client_id, "sub": rp.client_id, "aud": aud, "iat": now, "exp": now + 60,
        "jti": secrets.token_urlsafe(12)}, rp.key)


def client_auth(rp: KeyedRp) -> dict[str, str]:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion(rp)}


def request_object(rp: KeyedRp, params: dict[str, Any], *, key: Any = None, alg: str = "ES256",
                   typ: str | None = "oauth-authz-req+jwt", aud: str = ISSUER,
                   lifetime: int = 60, iat_offset: int = 0, **claims: Any) -> str:
    now = int(time.time()) + iat_offset
    header = {"alg": alg, "kid": rp.kid}
    if typ:
        header["typ"] = typ
    body = {"iss": rp.client_id, "aud": aud, "client_id": rp.client_id, "iat": now,
            "nbf": now, "exp": now + lifetime, "jti": secrets.token_urlsafe(8), **params,
            **claims}
    return jwt.encode(header, body, key or rp.key)


def alg_none(claims: dict[str, Any]) -> str:
    def part(data: dict) -> str:
        import json
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'oauth-authz-req+jwt'})}.{part(claims)}."


def authorization_params(rp: Rp, **extra: Any) -> tuple[dict[str, str], str]:
    """A code-flow request with PKCE S256; returns (params, code_verifier)."""
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": rp.client_id,
              "redirect_uri": rp.redirect_uri or REDIRECT, "scope": "openid profile",
              "state": "st-" + secrets.token_hex(4), "nonce": "n-" + secrets.token_hex(4),
              "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    return {k: v for k, v in params.items() if v is not None}, verifier


def dpop_proof(key: Any, method: str, url: str, *, access_token: str | None = None,
               nonce: str | None = None, iat_offset: int = 0, jti: str | None = None,
               typ: str = "dpop+jwt", alg: str = "ES256", jwk: dict | None = None,
               sign_with: Any = None) -> str:
    claims: dict[str, Any] = {"jti": jti or secrets.token_urlsafe(12), "htm": method,
                              "htu": url, "iat": int(time.time()) + iat_offset}
    if access_token is not None:
        claims["ath"] = base64.urlsafe_b64encode(
            hashlib.sha256(access_token.encode()).digest()).rstrip(b"=").decode()
    if nonce is not None:
        claims["nonce"] = nonce
    header = {"typ": typ, "alg": alg, "jwk": jwk or key.as_dict(private=False)}
    return jwt.encode(header, claims, sign_with or key)


def thumbprint(key: Any) -> str:
    return key.thumbprint()


def keep_secret(kind: str, value: str) -> str:
    register_secret(kind, value)
    return value
