"""A UDAP client written from the HL7 FAST Security IG STU2 (no published Python or node UDAP
client library exists on the registries): discovery with signed_metadata validation (§2.3),
software statements and registration requests (§3.1), client assertions with x5c for the
token endpoint (§4.2.1, §5.2.1) and the hl7-b2b extension (§5.2.1.1).

It talks to any WSGI test client or HTTP session with .get/.post; tokens are signed with the
holder's certificate key and carry its chain in x5c."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.x509 import verification
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import JWSRegistry

from tests.udap_pki import Holder

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# x5c headers hold certificate chains: more than joserfc's default 512-byte header bound.
REGISTRY = JWSRegistry()
REGISTRY.max_header_length = 24576


def _key(holder: Holder) -> RSAKey | ECKey:
    return (RSAKey if holder.alg == "RS256" else ECKey).import_key(holder.key)  # type: ignore[arg-type]


def sign(holder: Holder, claims: dict[str, Any], *, header: dict[str, Any] | None = None,
         x5c: list[str] | None = None) -> str:
    head = {"alg": holder.alg, "x5c": x5c if x5c is not None else holder.x5c(),
            **(header or {})}
    return jwt.encode(head, claims, _key(holder), algorithms=[head["alg"]], registry=REGISTRY)


def validate_signed_metadata(doc: dict[str, Any], base_url: str,
                             anchors: list[x509.Certificate]) -> dict[str, Any]:
    """IG §2.3 from the client's side: signed_metadata's x5c chains to an anchor the client
    trusts, the leaf's SAN URI is the base URL, iss = sub = it, the signature verifies with the
    leaf's key, and the signed endpoints match the plain ones. Returns the claims."""
    token = doc["signed_metadata"]
    # the signature, with the leaf key of the x5c header
    head = jwt.decode(token, lambda obj: _leaf_key(obj.headers()), registry=REGISTRY).header
    chain = [x509.load_der_x509_certificate(base64.b64decode(c))
             for c in head["x5c"]]
    verifier = (verification.PolicyBuilder().store(verification.Store(anchors))
                .time(datetime.now(UTC)).build_client_verifier())
    verified = verifier.verify(chain[0], chain[1:])
    uris = [n.value for n in verified.subjects if isinstance(n, x509.UniformResourceIdentifier)]
    claims = jwt.decode(token, lambda obj: _leaf_key(obj.headers()), registry=REGISTRY).claims
    assert base_url in uris, uris
    assert claims["iss"] == claims["sub"] == base_url
    assert claims["exp"] > time.time() and claims["iat"] <= time.time() + 60
    for name in ("authorization_endpoint", "token_endpoint", "registration_endpoint"):
        assert claims[name] == doc[name], name
    return claims


def _leaf_key(head: dict[str, Any]) -> RSAKey | ECKey:
    leaf = x509.load_der_x509_certificate(base64.b64decode(head["x5c"][0]))
    return (RSAKey if head["alg"].startswith("RS") else ECKey).import_key(leaf.public_key())  # type: ignore[arg-type]


@dataclass
class UdapClient:
    holder: Holder
    iss: str                        # the certificate's SAN URI
    server: str                     # the authorization server's base URL
    client_id: str | None = None
    used: list[str] = field(default_factory=list)

    @property
    def registration_endpoint(self) -> str:
        return f"{self.server}/register"

    @property
    def token_endpoint(self) -> str:
        return f"{self.server}/token"

    # -- registration (IG §3.1) ---------------------------------------------------------------
    def statement(self, *, grant_types: list[str] | None = None, scope: str = "system/*.read",
                  redirect_uris: list[str] | None = None, lifetime: int = 300,
                  **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        grants = ["client_credentials"] if grant_types is None else grant_types
        claims: dict[str, Any] = {
            "iss": self.iss, "sub": self.iss, "aud": self.registration_endpoint,
            "exp": now + lifetime, "iat": now, "jti": secrets.token_urlsafe(16),
            "client_name": "UDAP Test App", "grant_types": grants,
            "token_endpoint_auth_method": "private_key_jwt", "scope": scope,
            "contacts": ["mailto:ops@apps.example.org"]}
        if "authorization_code" in grants:
            claims.update(redirect_uris=redirect_uris or ["https://apps.example.org/cb"],
                          response_types=["code"],
                          logo_uri="https://apps.example.org/logo.png")
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def register_body(self, claims: dict[str, Any], *, holder: Holder | None = None,
                      header: dict[str, Any] | None = None, x5c: list[str] | None = None
                      ) -> dict[str, Any]:
        return {"software_statement": sign(holder or self.holder, claims, header=header,
                                           x5c=x5c),
                "udap": "1"}

    def register(self, http: Any, **kw: Any) -> Any:
        response = http.post("/register", json=self.register_body(self.statement(**kw)))
        if response.status_code in (200, 201):
            cancelled = kw.get("grant_types") == []
            self.client_id = None if cancelled else response.get_json()["client_id"]
        return response

    # -- token requests (IG §4.2.1, §5.2.1) -------------------------------------------------
    def assertion(self, *, extensions: dict[str, Any] | None = None,
                  holder: Holder | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.client_id, "sub": self.client_id,
                                  "aud": self.token_endpoint, "exp": now + 300, "iat": now,
                                  "jti": secrets.token_urlsafe(16)}
        if extensions is not None:
            claims["extensions"] = extensions
        claims.update(overrides)
        return sign(holder or self.holder, claims)

    def client_credentials(self, http: Any, scope: str, *, b2b: dict[str, Any] | None = None,
                           assertion: str | None = None) -> Any:
        extensions = {"hl7-b2b": b2b} if b2b is not None else None
        return http.post("/token", data={
            "grant_type": "client_credentials", "scope": scope, "udap": "1",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or self.assertion(extensions=extensions)})

    def code_exchange(self, http: Any, code: str, redirect_uri: str, verifier: str) -> Any:
        return http.post("/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": verifier, "udap": "1", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion()})


def b2b(**overrides: Any) -> dict[str, Any]:
    """An hl7-b2b extension object (IG §5.2.1.1)."""
    body = {"version": "1", "organization_id": "https://payer.example.org/org/123",
            "organization_name": "Example Payer",
            "purpose_of_use": ["urn:oid:2.16.840.1.113883.5.8#TREAT"],
            "subject_id": "urn:oid:2.16.840.1.113883.4.6#1234567893",
            "subject_name": "Alex Rivera",
            "consent_reference": ["https://payer.example.org/Consent/1"]}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}
