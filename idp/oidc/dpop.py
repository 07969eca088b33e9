"""DPoP (RFC 9449): proofs of possession checked at the token endpoint, userinfo and wherever
the IdP accepts its access tokens; tokens bound to the proof's key.

A proof is verified as a JWT by idp.keys.jwt (kind DPOP_PROOF: typ dpop+jwt, an asymmetric
alg of policies/fapi.toml [dpop], a public jwk in its header). Here: the method and URL it
names (htm, htu: scheme and host compared case-insensitively, default port dropped, query
and fragment ignored), its age (iat within the policy's window), `ath` (the hash of the access
token it comes with), the server nonce when the policy asks for one (use_dpop_nonce), and its
jti used once (a row per proof, kept past the window). A bound access token carries
`cnf.jkt` (RFC 9449 §6.1) and is sent with the DPoP scheme; a public client's refresh token
is bound to the key too (§5).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from authlib.oauth2.rfc6749.errors import OAuth2Error
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.context import policy, settings
from idp.core.crypto import digest
from idp.extensions import db
from idp.keys import jwt
from idp.oidc.models import UsedDpopProof

HEADER = "DPoP"
PURGE_EVERY = 200
NONCE_HEADER = "DPoP-Nonce"


class InvalidDpopProof(OAuth2Error):
    """RFC 9449 §5 / §7.1: the proof is missing, malformed or does not match the request."""

    error = "invalid_dpop_proof"
    status_code = 400


class UseDpopNonce(OAuth2Error):
    """RFC 9449 §8: the proof must carry the nonce the answer's DPoP-Nonce header gives."""

    error = "use_dpop_nonce"
    status_code = 400

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), (NONCE_HEADER, new_nonce())]


def thumbprint_hash(token: str) -> str:
    """`ath`: base64url SHA-256 of the access token (RFC 9449 §4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()) \
        .rstrip(b"=").decode()


def normal_url(url: str) -> str | None:
    """An htu as RFC 9449 §4.3 compares it: without query and fragment, scheme and host
    lowercased, default port removed (RFC 3986 §6.2.2, §6.2.3)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", "", ""))


def endpoint_url(path: str) -> str:
    """The URL a client names for one of our endpoints: the issuer's (behind the proxy)."""
    return settings().issuer + path


def check_proof(proof: Any, *, method: str, url: str, access_token: str | None = None
                ) -> str:
    """The thumbprint of the key of a valid, unused proof for this request; raises
    InvalidDpopProof or UseDpopNonce. The proof's jti is recorded (committed) when valid."""
    rules = policy().fapi.dpop
    try:
        verified = jwt.verify(proof, jwt.Kind.DPOP_PROOF, algorithms=rules.algorithms)
    except jwt.InvalidJWT as exc:
        raise InvalidDpopProof(f"DPoP proof refused: {exc}") from None
    claims = verified.claims
    if claims["htm"] != method:
        raise InvalidDpopProof("DPoP proof: htm is not this request's method")
    if normal_url(claims["htu"]) != normal_url(url):
        raise InvalidDpopProof("DPoP proof: htu is not this request's URL")
    if abs(clock.timestamp() - claims["iat"]) > rules.iat_window:
        raise InvalidDpopProof("DPoP proof: iat is outside the accepted window")
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
                ath.encode(), thumbprint_hash(access_token).encode()):
            raise InvalidDpopProof("DPoP proof: ath does not match the access token")
    if rules.require_nonce and not valid_nonce(claims.get("nonce")):
        raise UseDpopNonce("DPoP proof: use the server's nonce (DPoP-Nonce)")
    _use_jti(verified.jkt or "", claims["jti"])
    return verified.jkt or ""


def _use_jti(jkt: str, jti: str) -> None:
    key = digest(f"dpop:{jkt}:{jti}")
    if db.session.get(UsedDpopProof, key) is not None:
        raise InvalidDpopProof("DPoP proof: replayed (jti used before)")
    keep = 2 * policy().fapi.dpop.iat_window + 1  # past any iat the window admits
    if secrets.randbelow(PURGE_EVERY) == 0:
        purge_used()
    try:
        with db.session.begin_nested():
            db.session.add(UsedDpopProof(jti_hash=key,
                                         expires_at=clock.now() + timedelta(seconds=keep)))
        db.session.commit()  # a refused request after this must not free the jti
    except IntegrityError:
        raise InvalidDpopProof("DPoP proof: replayed (jti used before)") from None


def purge_used() -> None:
    """Drop remembered jtis past their window (about one proof in PURGE_EVERY does it)."""
    db.session.execute(delete(UsedDpopProof).where(UsedDpopProof.expires_at <= clock.now()))


# -- server nonces (RFC 9449 §8): stateless, a MAC over the time they were made ---------------
def new_nonce() -> str:
    stamp = str(clock.timestamp())
    return f"{stamp}.{_mac(stamp)}"


def valid_nonce(nonce: Any) -> bool:
    if not isinstance(nonce, str) or nonce.count(".") != 1 or len(nonce) > 64:
        return False
    stamp, mac = nonce.split(".")
    if not stamp.isascii() or not stamp.isdigit() or not hmac.compare_digest(mac, _mac(stamp)):
        return False
    age = clock.timestamp() - int(stamp)
    return -5 <= age <= policy().fapi.dpop.nonce_lifetime


def _mac(stamp: str) -> str:
    key = ("dpop-nonce:" + settings().secret_key).encode()
    return base64.urlsafe_b64encode(hmac.new(key, stamp.encode(), hashlib.sha256).digest()[:18]
                                    ).decode()


# -- binding -----------------------------------------------------------------------------------
def bound_key(claims: dict[str, Any]) -> str | None:
    """The jkt an access token is bound to (cnf.jkt), or None for a bearer token."""
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) and jkt else None


def token_request_key(headers: Any, method: str, path: str) -> str | None:
    """The key a request to our endpoint `path` proves (its DPoP header), or None without
    one; more than one DPoP header is refused (RFC 9449 §4.3 step 1)."""
    values = headers.getlist(HEADER) if hasattr(headers, "getlist") else [headers.get(HEADER)]
    values = [v for v in values if v is not None]
    if not values:
        return None
    if len(values) > 1:
        raise InvalidDpopProof("DPoP proof: one DPoP header only")
    return check_proof(values[0], method=method, url=endpoint_url(path))


class ResourceRefused(Exception):
    """A request to a resource (userinfo) whose token and proof do not go together: `error`
    for the WWW-Authenticate challenge (RFC 9449 §7.1), 401."""

    def __init__(self, error: str, description: str, *, nonce: bool = False) -> None:
        super().__init__(description)
        self.error, self.description, self.nonce = error, description, nonce


def check_resource_request(headers: Any, *, method: str, url: str, scheme: str, token: str,
                           claims: dict[str, Any]) -> None:
    """A bearer token with the Bearer scheme passes; a DPoP-bound one needs the DPoP scheme
    and a valid proof by the key it is bound to (with `ath` of this token)."""
    bound = bound_key(claims)
    if bound is None:
        if scheme == "dpop":
            raise ResourceRefused("invalid_token", "the token is not DPoP-bound")
        return
    if scheme != "dpop":
        raise ResourceRefused("invalid_token", "a DPoP-bound token is sent with the DPoP "
                              "scheme and a proof")
    values = [v for v in headers.getlist(HEADER)]
    if len(values) != 1:
        raise ResourceRefused("invalid_dpop_proof", "one DPoP proof is required")
    try:
        jkt = check_proof(values[0], method=method, url=url, access_token=token)
    except UseDpopNonce as exc:
        raise ResourceRefused("use_dpop_nonce", str(exc.description), nonce=True) from None
    except InvalidDpopProof as exc:
        raise ResourceRefused("invalid_dpop_proof", str(exc.description)) from None
    if not hmac.compare_digest(jkt, bound):
        raise ResourceRefused("invalid_token", "the proof's key is not the one the token is "
                              "bound to")
