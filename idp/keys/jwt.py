"""The one module that signs the IdP's JWTs and verifies every JWT it is handed.

Each JWT is accepted only in its own role (RFC 8725 §3.11 explicit typing): the caller says
which kind it expects, and the kind fixes the algorithms, the `typ` header values, the
signer's keys, the issuer and audience rule and the lifetime rule. The IdP's own keys sign ID
tokens (`typ: JWT`), access tokens (`typ: at+jwt`, RFC 9068) and logout tokens
(`typ: logout+jwt`, Back-Channel Logout 1.0), so a signature alone says nothing about the
role: an access token is not an ID token hint, a logout token is not a client assertion even
for a client that registered the IdP's own JWKS as its keys, and a token carrying `events` (a
Security Event Token, RFC 8417) is accepted only as a logout token. Clients' request objects
(RFC 9101, `typ: oauth-authz-req+jwt`) and DPoP proofs (RFC 9449, `typ: dpop+jwt`, verified
with the public key in their own header: verify_dpop_proof) are kinds of their own too.

Every refusal is one exception, InvalidJWT, whose message is safe to show (no token data).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import JWKRegistry, KeySet
from joserfc.jwt import JWTClaimsRegistry
from joserfc.util import urlsafe_b64decode

from idp import clock
from idp.context import keystore, settings
from idp.core import bounded_json
from idp.policy import SIGNING_ALGORITHMS

ALGORITHMS = SIGNING_ALGORITHMS  # asymmetric only (idp.policy)
ID_TOKEN_TYP = "JWT"
ACCESS_TOKEN_TYP = "at+jwt"
LOGOUT_TOKEN_TYP = "logout+jwt"
REQUEST_OBJECT_TYP = "oauth-authz-req+jwt"
DPOP_TYP = "dpop+jwt"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
MAX_LENGTH = 8192                 # our tokens and client assertions
MAX_STATEMENT_LENGTH = 16384      # software statements carry client metadata
LEEWAY = 60                       # seconds of clock skew on others' exp/nbf/iat


class Kind(Enum):
    """What the caller expects the token to be."""

    ID_TOKEN_HINT = "an ID token"
    ACCESS_TOKEN = "an access token"
    LOGOUT_TOKEN = "a logout token"
    CLIENT_ASSERTION = "a client assertion"
    SOFTWARE_STATEMENT = "a software statement"
    REQUEST_OBJECT = "a request object"
    DPOP_PROOF = "a DPoP proof"  # its key is in its header: verify(..., algorithms=)
    # An upstream OpenID Provider's tokens, when the IdP is the relying party (federation).
    UPSTREAM_ID_TOKEN = "an upstream ID token"
    UPSTREAM_LOGOUT_TOKEN = "an upstream logout token"
    # UDAP (HL7 FAST Security IG): signed with the key of the x5c leaf certificate, whose
    # path the caller validated (idp.udap.trust) before handing its key here.
    UDAP_SOFTWARE_STATEMENT = "a UDAP software statement"
    UDAP_CLIENT_ASSERTION = "a UDAP client assertion"
    # Another server's /.well-known/udap signed_metadata (Tiered OAuth: the upstream IdP).
    UDAP_SIGNED_METADATA = "UDAP signed metadata"


# Accepted `typ` values, compared case-insensitively with any "application/" prefix removed
# (RFC 7515 §4.1.9); "" is a token without `typ`.
_TYPS: dict[Kind, frozenset[str]] = {
    Kind.ID_TOKEN_HINT: frozenset({"", "jwt"}),
    Kind.ACCESS_TOKEN: frozenset({ACCESS_TOKEN_TYP}),
    Kind.LOGOUT_TOKEN: frozenset({LOGOUT_TOKEN_TYP}),
    # RFC 7523 sets no typ; draft-ietf-oauth-rfc7523bis names client-authentication+jwt.
    Kind.CLIENT_ASSERTION: frozenset({"", "jwt", "client-authentication+jwt"}),
    Kind.SOFTWARE_STATEMENT: frozenset({"", "jwt"}),
    # RFC 9101 §10.8 explicit typing, required here (FAPI 2.0 clients send it).
    Kind.REQUEST_OBJECT: frozenset({REQUEST_OBJECT_TYP}),
    Kind.DPOP_PROOF: frozenset({DPOP_TYP}),
    Kind.UPSTREAM_ID_TOKEN: frozenset({"", "jwt"}),
    Kind.UPSTREAM_LOGOUT_TOKEN: frozenset({"", "jwt", LOGOUT_TOKEN_TYP}),
    Kind.UDAP_SOFTWARE_STATEMENT: frozenset({"", "jwt"}),
    Kind.UDAP_CLIENT_ASSERTION: frozenset({"", "jwt"}),
    Kind.UDAP_SIGNED_METADATA: frozenset({"", "jwt"}),
}
_UDAP = frozenset({Kind.UDAP_SOFTWARE_STATEMENT, Kind.UDAP_CLIENT_ASSERTION,
                   Kind.UDAP_SIGNED_METADATA})
MAX_UDAP_LENGTH = 24576           # UDAP tokens carry their certificate chain (x5c)
# The x5c header of a UDAP token holds a chain of certificates: joserfc's default header
# bound (512 bytes) is for a header of names; the token's own length bound still applies.
_X5C_REGISTRY = jws.JWSRegistry()
_X5C_REGISTRY.max_header_length = MAX_UDAP_LENGTH
_OURS = frozenset({Kind.ID_TOKEN_HINT, Kind.ACCESS_TOKEN, Kind.LOGOUT_TOKEN})


class InvalidJWT(ValueError):
    """The token cannot be accepted as the kind expected; str() says why, safely."""


@dataclass(frozen=True)
class Verified:
    header: dict[str, Any]
    claims: dict[str, Any]
    jkt: str | None = None  # a DPoP proof's key: its RFC 7638 thumbprint


# -- signing -----------------------------------------------------------------------------------
def header(alg: str, typ: str | None) -> dict[str, str]:
    """The protected header of a token signed with our active `alg` key."""
    result = {"alg": alg, "kid": keystore().signing_key(alg).kid}
    if typ:
        result["typ"] = typ
    return result


def sign(claims: dict, alg: str, typ: str | None = None) -> str:
    """Claims signed with our active key of `alg`; every token we issue names its `typ`."""
    key = keystore().signing_key(alg)
    return jwt.encode(header(alg, typ), claims, key.key, algorithms=[alg])


def sign_with_certificate(claims: dict, key: Any, alg: str, x5c: list[str]) -> str:
    """Claims signed with a certificate's key, the chain in the `x5c` header: UDAP signed
    metadata (HL7 FAST Security IG §2.3), whose key is the server's certificate's, not one of
    our OIDC signing keys."""
    return jwt.encode({"alg": alg, "x5c": x5c}, claims, key, algorithms=[alg])


# -- verifying ---------------------------------------------------------------------------------
# A JWT's header and payload are JSON an outsider wrote: bounded like any JSON body (a payload
# of 1,400 nested arrays made the parser raise RecursionError, a 500, before this).
_JSON_DEPTH = 16
_JSON_VALUES = 1000


def _bounded(token: str) -> None:
    """InvalidJWT when the header or payload is not base64url JSON within the bounds."""
    for segment in token.split(".")[:2]:
        try:
            text = urlsafe_b64decode(segment.encode()).decode("utf-8")
            bounded_json.check(text, max_depth=_JSON_DEPTH, max_values=_JSON_VALUES)
        except (ValueError, TypeError):  # binascii.Error, UnicodeDecodeError, JsonTooComplex
            raise InvalidJWT("malformed token") from None


def unverified_claims(token: Any, kind: Kind) -> dict[str, Any]:
    """The payload before any check (to find whose keys verify it: a client assertion's
    `sub`, a software statement's `iss`). Never trust what it says."""
    if not isinstance(token, str) or len(token) > _limit(kind):
        raise InvalidJWT("malformed token")
    _bounded(token)
    try:
        payload = json.loads(jws.extract_compact(
            token.encode(), registry=_X5C_REGISTRY if kind in _UDAP else None).payload)
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise InvalidJWT("malformed token") from None
    if not isinstance(payload, dict):
        raise InvalidJWT("malformed token")
    return payload


def unverified_header(token: Any, kind: Kind) -> dict[str, Any]:
    """The protected header before any check (a UDAP token's x5c, whose path is validated
    before its leaf's key verifies the token). Never trust what it says."""
    if not isinstance(token, str) or len(token) > _limit(kind) or token.count(".") != 2:
        raise InvalidJWT("malformed token")
    _bounded(token)
    try:
        head = jws.extract_compact(token.encode(), registry=_X5C_REGISTRY).headers()
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise InvalidJWT("malformed token") from None
    return dict(head)


def verify(token: Any, kind: Kind, *, keys: KeySet | None = None,
           is_client: Callable[[str], bool] | None = None, client_id: str | None = None,
           audiences: Collection[str] = (), issuer: str | None = None,
           max_lifetime: int | None = None, algorithms: Collection[str] | None = None
           ) -> Verified:
    """Verify `token` as `kind`, or raise InvalidJWT.

    keys: the signer's keys (default: ours; required for a client assertion, the client's
    registered keys, and a software statement, the publisher's keys).
    ID_TOKEN_HINT: `is_client(client_id)` says whether the token's audience is registered;
    expiry is not checked (logout comes after expiry too).
    LOGOUT_TOKEN: `audiences` (optional) the client it must name.
    CLIENT_ASSERTION: `client_id` (iss == sub == it), `audiences` (one must be in `aud`),
    `max_lifetime` (exp at most this far ahead). `jti` single use is the caller's.
    SOFTWARE_STATEMENT: `issuer` (the trusted publisher whose keys are given).
    REQUEST_OBJECT: `client_id` (iss and client_id claims), `audiences` (our issuer),
    `max_lifetime` (exp at most this far ahead, iat/nbf at most this far back; negative:
    exp may be absent).
    DPOP_PROOF: `algorithms` (the policy's); the key is the proof's own header `jwk`, its
    thumbprint is Verified.jkt.
    UPSTREAM_ID_TOKEN: `issuer` (the upstream's discovered issuer), `client_id` (ours there:
    in `aud`, and `azp` when present or when `aud` names others); exp and iat required. The
    nonce is the caller's (it is bound to the browser's flow).
    UPSTREAM_LOGOUT_TOKEN: `issuer` and `client_id` likewise; events, iat, exp (BCL 1.0 §2.4),
    jti, no nonce. `jti` single use is the caller's.
    UDAP_SOFTWARE_STATEMENT: `keys` (the x5c leaf's, path already validated), `issuer` (the
    certificate's SAN URI: iss == sub == it), `audiences` (our registration endpoint),
    `max_lifetime` (exp at most this far after iat); exp, iat and jti required. `jti` single
    use is the caller's.
    UDAP_CLIENT_ASSERTION: like CLIENT_ASSERTION (client_id, audiences, max_lifetime), with
    iat required; the header must carry x5c.
    UDAP_SIGNED_METADATA: `keys` (the x5c leaf's, path already validated), `issuer` (the
    server's base URL, its certificate's SAN URI: iss == sub == it), `max_lifetime` (exp at
    most this far after iat); exp, iat and the endpoints required, no aud.
    """
    if kind is Kind.DPOP_PROOF:
        return _dpop_proof(token, algorithms or (*ALGORITHMS, "PS256"))
    if not isinstance(token, str) or not token or len(token) > _limit(kind) \
            or token.count(".") != 2:
        raise InvalidJWT("malformed token")
    if kind not in _OURS and keys is None:
        raise TypeError(f"{kind.name} needs the signer's keys")
    _bounded(token)
    try:
        decoded = jwt.decode(token, keys if keys is not None else keystore().verification_keys(),
                             algorithms=list(ALGORITHMS),
                             registry=_X5C_REGISTRY if kind in _UDAP else None)
    except (JoseError, ValueError, TypeError, KeyError, UnicodeError):
        raise InvalidJWT("signature or format invalid") from None
    head, claims = dict(decoded.header), decoded.claims
    typ = head.get("typ", "")
    if not isinstance(typ, str) or _normal(typ) not in _TYPS[kind]:
        raise InvalidJWT(f"not {kind.value}")
    if kind in _UDAP and not isinstance(head.get("x5c"), list):
        raise InvalidJWT(f"not {kind.value} (x5c)")
    if "events" in claims and kind not in (Kind.LOGOUT_TOKEN, Kind.UPSTREAM_LOGOUT_TOKEN):
        raise InvalidJWT(f"not {kind.value}")  # a Security Event Token (a logout token)
    ours = settings().issuer
    if kind in _OURS and claims.get("iss") != ours:
        raise InvalidJWT("wrong issuer")
    if kind not in _OURS and claims.get("iss") == ours:
        raise InvalidJWT(f"not {kind.value}")  # one of our own tokens, whoever's keys match
    _CHECKS[kind](claims, is_client=is_client, client_id=client_id, audiences=audiences,
                  issuer=issuer, max_lifetime=max_lifetime)
    return Verified(head, claims)


# A proof's header carries its public key: an RSA key's is longer than joserfc's default 512.
_DPOP_REGISTRY = jws.JWSRegistry()
_DPOP_REGISTRY.max_header_length = 2048

# Members of a JWK that only a private key has (RFC 7518 §6): a DPoP proof carrying one is
# refused, its holder has published the key it proves possession of.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _dpop_proof(token: Any, algorithms: Collection[str]) -> Verified:
    """A DPoP proof (RFC 9449 §4.3 steps 1-7: one well-formed JWT, typ dpop+jwt, an
    asymmetric `alg` of `algorithms`, a public `jwk` in the header that verifies the
    signature, jti/htm/htu/iat present) with the RFC 7638 thumbprint of its key. Matching
    htm, htu, iat, ath, nonce and jti single use are the caller's (idp.oidc.dpop)."""
    if not isinstance(token, str) or not token or len(token) > MAX_LENGTH \
            or token.count(".") != 2:
        raise InvalidJWT("malformed proof")
    _bounded(token)
    try:
        head = jws.extract_compact(token.encode(), registry=_DPOP_REGISTRY).headers()
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise InvalidJWT("malformed proof") from None
    typ, alg, jwk = head.get("typ"), head.get("alg"), head.get("jwk")
    if not isinstance(typ, str) or _normal(typ) != DPOP_TYP:
        raise InvalidJWT(f"not {Kind.DPOP_PROOF.value} (typ)")
    if not isinstance(alg, str) or alg not in algorithms:
        raise InvalidJWT("signature or format invalid (alg)")
    if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & set(jwk):
        raise InvalidJWT("the proof's jwk must be a public key")
    try:
        key = JWKRegistry.import_key(jwk)
        decoded = jwt.decode(token, key, algorithms=[alg], registry=_DPOP_REGISTRY)
        thumbprint = key.thumbprint()
    except (JoseError, ValueError, TypeError, KeyError, UnicodeError):
        raise InvalidJWT("signature or format invalid") from None
    claims = decoded.claims
    if not isinstance(claims.get("jti"), str) or not claims["jti"] or len(claims["jti"]) > 256:
        raise InvalidJWT("the proof needs a jti")
    for name in ("htm", "htu"):
        if not isinstance(claims.get(name), str):
            raise InvalidJWT(f"the proof needs {name}")
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise InvalidJWT("the proof needs iat")
    return Verified(dict(decoded.header), claims, thumbprint)


def _limit(kind: Kind) -> int:
    if kind in _UDAP:
        return MAX_UDAP_LENGTH
    return MAX_STATEMENT_LENGTH if kind in (Kind.SOFTWARE_STATEMENT, Kind.REQUEST_OBJECT) \
        else MAX_LENGTH


def _normal(typ: str) -> str:
    typ = typ.lower()
    return typ.removeprefix("application/")


def _id_token_hint(claims: dict, *, is_client: Callable[[str], bool] | None, **_: Any) -> None:
    if is_client is None:
        raise TypeError("ID_TOKEN_HINT needs is_client")
    aud = claims.get("aud")
    audience = [aud] if isinstance(aud, str) else aud
    if not isinstance(audience, list) or not audience or \
            not all(isinstance(a, str) and a for a in audience):
        raise InvalidJWT("not an ID token (aud)")
    azp = claims.get("azp")
    if azp is not None and (not isinstance(azp, str) or azp not in audience):
        raise InvalidJWT("not an ID token (azp)")
    named = azp or (audience[0] if len(audience) == 1 else None)
    if named is None or not is_client(named):
        raise InvalidJWT("not an ID token for a registered client")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidJWT("not an ID token (sub)")


def _access_token(claims: dict, **_: Any) -> None:
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool) or exp <= clock.timestamp():
        raise InvalidJWT("token expired")


def _logout_token(claims: dict, *, audiences: Collection[str], **_: Any) -> None:
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
        raise InvalidJWT("not a logout token (events)")
    if "nonce" in claims:
        raise InvalidJWT("not a logout token (nonce)")
    if not (isinstance(claims.get("sub"), str) or isinstance(claims.get("sid"), str)):
        raise InvalidJWT("not a logout token (sub or sid)")
    options: dict[str, Any] = {n: {"essential": True} for n in ("iat", "exp", "jti", "aud")}
    if audiences:
        options["aud"] = {"essential": True, "values": list(audiences)}
    _registry(claims, 0, options)


def _client_assertion(claims: dict, *, client_id: str | None, audiences: Collection[str],
                      max_lifetime: int | None, **_: Any) -> None:
    if not client_id or not audiences or max_lifetime is None:
        raise TypeError("CLIENT_ASSERTION needs client_id, audiences and max_lifetime")
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidJWT("iss and sub must both be the client_id")
    _registry(claims, LEEWAY, {"aud": {"essential": True, "values": list(audiences)},
                               "exp": {"essential": True}, "jti": {"essential": True}})
    if claims["exp"] - clock.timestamp() > max_lifetime:
        raise InvalidJWT(f"the assertion must expire within {max_lifetime} seconds")


def _software_statement(claims: dict, *, issuer: str | None, **_: Any) -> None:
    if not issuer:
        raise TypeError("SOFTWARE_STATEMENT needs the publisher (issuer)")
    _registry(claims, LEEWAY, {"iss": {"essential": True, "value": issuer}})


def _udap_software_statement(claims: dict, *, issuer: str | None, audiences: Collection[str],
                             max_lifetime: int | None, **_: Any) -> None:
    """FAST Security IG §3.1: iss == sub == the certificate's SAN URI, aud our registration
    endpoint, exp at most max_lifetime (5 minutes) after iat, jti present."""
    if not issuer or not audiences or max_lifetime is None:
        raise TypeError("UDAP_SOFTWARE_STATEMENT needs issuer, audiences and max_lifetime")
    if claims.get("iss") != issuer or claims.get("sub") != issuer:
        raise InvalidJWT("iss and sub must both be the certificate's URI")
    _udap_times(claims, audiences, max_lifetime)


def _udap_client_assertion(claims: dict, *, client_id: str | None, audiences: Collection[str],
                           max_lifetime: int | None, **_: Any) -> None:
    """FAST Security IG §4.2.1 / §5.2.1: iss == sub == client_id, aud the token endpoint,
    exp at most max_lifetime after iat, iat and jti present."""
    if not client_id or not audiences or max_lifetime is None:
        raise TypeError("UDAP_CLIENT_ASSERTION needs client_id, audiences and max_lifetime")
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidJWT("iss and sub must both be the client_id")
    _udap_times(claims, audiences, max_lifetime)


def _udap_signed_metadata(claims: dict, *, issuer: str | None, max_lifetime: int | None,
                          **_: Any) -> None:
    """FAST Security IG §2.3: iss == sub == the server's base URL, exp and iat, exp within
    the metadata's lifetime bound (a year)."""
    if not issuer or max_lifetime is None:
        raise TypeError("UDAP_SIGNED_METADATA needs issuer and max_lifetime")
    if claims.get("iss") != issuer or claims.get("sub") != issuer:
        raise InvalidJWT("iss and sub must both be the server's base URL")
    if "aud" in claims or not all(isinstance(claims.get(name), str) for name in
                                  ("authorization_endpoint", "token_endpoint")):
        raise InvalidJWT("not UDAP signed metadata (endpoints)")  # e.g. a software statement
    _registry(claims, LEEWAY, {"exp": {"essential": True}, "iat": {"essential": True}})
    if not isinstance(claims["iat"], int | float) or claims["exp"] - claims["iat"] > max_lifetime:
        raise InvalidJWT(f"the metadata must expire within {max_lifetime} seconds of iat")


def _udap_times(claims: dict, audiences: Collection[str], max_lifetime: int) -> None:
    _registry(claims, LEEWAY, {"aud": {"essential": True, "values": list(audiences)},
                               "exp": {"essential": True}, "iat": {"essential": True},
                               "jti": {"essential": True}})
    if not isinstance(claims["iat"], int | float) or claims["exp"] - claims["iat"] > max_lifetime:
        raise InvalidJWT(f"the token must expire within {max_lifetime} seconds of iat")
    if claims["iat"] > clock.timestamp() + LEEWAY:
        raise InvalidJWT("the token is issued in the future")


def _request_object(claims: dict, *, client_id: str | None, audiences: Collection[str],
                    max_lifetime: int | None, **_: Any) -> None:
    """RFC 9101 §4, §6.3: issued by the client, for us, within the policy's lifetime. A
    negative max_lifetime means exp may be absent (policy require_exp = false)."""
    if not client_id or not audiences or max_lifetime is None:
        raise TypeError("REQUEST_OBJECT needs client_id, audiences and max_lifetime")
    if claims.get("iss") != client_id or claims.get("client_id") != client_id:
        raise InvalidJWT("iss and client_id must both be the client_id")
    limit = abs(max_lifetime)
    options: dict[str, Any] = {"aud": {"essential": True, "values": list(audiences)}}
    if max_lifetime >= 0:
        options["exp"] = {"essential": True}
    _registry(claims, LEEWAY, options)
    now = clock.timestamp()
    if isinstance(claims.get("exp"), int) and claims["exp"] - now > limit:
        raise InvalidJWT(f"the request object must expire within {limit} seconds")
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if isinstance(value, int) and now - value > limit:
            raise InvalidJWT(f"the request object's {name} is too old")


def _upstream_id_token(claims: dict, *, issuer: str | None, client_id: str | None,
                       **_: Any) -> None:
    """OIDC Core §3.1.3.7 steps 2-5, 9, 10 for a token an upstream provider issued to us."""
    if not issuer or not client_id:
        raise TypeError("UPSTREAM_ID_TOKEN needs the upstream issuer and our client_id")
    if claims.get("iss") != issuer:
        raise InvalidJWT("wrong issuer")
    _upstream_audience(claims, client_id)
    if not isinstance(claims.get("sub"), str) or not claims["sub"] or len(claims["sub"]) > 255:
        raise InvalidJWT("not an ID token (sub)")
    _registry(claims, LEEWAY, {"exp": {"essential": True}, "iat": {"essential": True}})


def _upstream_logout_token(claims: dict, *, issuer: str | None, client_id: str | None,
                           **_: Any) -> None:
    """Back-Channel Logout 1.0 §2.6 for a logout token an upstream provider sent us."""
    if not issuer or not client_id:
        raise TypeError("UPSTREAM_LOGOUT_TOKEN needs the upstream issuer and our client_id")
    if claims.get("iss") != issuer:
        raise InvalidJWT("wrong issuer")
    _upstream_audience(claims, client_id)
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
        raise InvalidJWT("not a logout token (events)")
    if "nonce" in claims:
        raise InvalidJWT("not a logout token (nonce)")
    if not (isinstance(claims.get("sub"), str) or isinstance(claims.get("sid"), str)):
        raise InvalidJWT("not a logout token (sub or sid)")
    _registry(claims, LEEWAY, {"iat": {"essential": True}, "exp": {"essential": True},
                               "jti": {"essential": True}})


def _upstream_audience(claims: dict, client_id: str) -> None:
    aud = claims.get("aud")
    audience = [aud] if isinstance(aud, str) else aud
    if not isinstance(audience, list) or client_id not in audience:
        raise InvalidJWT("wrong audience")
    azp = claims.get("azp")
    if azp is not None and azp != client_id:
        raise InvalidJWT("wrong authorized party (azp)")
    if len(audience) > 1 and azp is None:
        raise InvalidJWT("several audiences and no azp")


def _registry(claims: dict, leeway: int, options: dict[str, Any]) -> None:
    """Registered claims: types, exp/nbf/iat against now (with leeway), options."""
    try:
        JWTClaimsRegistry(now=int(clock.timestamp()), leeway=leeway, **options).validate(claims)
    except ExpiredTokenError:
        raise InvalidJWT("token expired") from None
    except (JoseError, ValueError, TypeError, OverflowError) as exc:
        description = getattr(exc, "description", None) or "a claim is invalid"
        raise InvalidJWT(str(description)) from None


_CHECKS: dict[Kind, Callable[..., None]] = {
    Kind.ID_TOKEN_HINT: _id_token_hint,
    Kind.ACCESS_TOKEN: _access_token,
    Kind.LOGOUT_TOKEN: _logout_token,
    Kind.CLIENT_ASSERTION: _client_assertion,
    Kind.SOFTWARE_STATEMENT: _software_statement,
    Kind.REQUEST_OBJECT: _request_object,
    Kind.UPSTREAM_ID_TOKEN: _upstream_id_token,
    Kind.UPSTREAM_LOGOUT_TOKEN: _upstream_logout_token,
    Kind.UDAP_SOFTWARE_STATEMENT: _udap_software_statement,
    Kind.UDAP_CLIENT_ASSERTION: _udap_client_assertion,
    Kind.UDAP_SIGNED_METADATA: _udap_signed_metadata,
}
