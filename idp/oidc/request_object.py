"""Signed request objects (RFC 9101 JAR): an authorization request's parameters as a JWT the
client signed with a key of its registered JWKS (idp.keys.jwt, kind REQUEST_OBJECT: explicit
`typ: oauth-authz-req+jwt`, iss and client_id the client, aud our issuer, bounded lifetime).
Only the object's parameters count (RFC 9101 §6.3); `alg: none` never verifies."""

from __future__ import annotations

import json
from typing import Any, cast

from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp.context import policy, settings
from idp.keys import jwt
from idp.oidc import client_profile
from idp.oidc.models import Client

# The object's registered claims: not authorization request parameters.
_JWT_CLAIMS = frozenset({"iss", "aud", "exp", "iat", "nbf", "jti", "sub"})
# Parameters whose value is JSON (RFC 9396 §3: an array in a request object), kept as its text.
_JSON_VALUED = frozenset({"authorization_details"})
# Parameters a request object may not carry (RFC 9101 §4: no nesting).
_NESTED = frozenset({"request", "request_uri"})


class InvalidRequestObject(OAuth2Error):
    """RFC 9101 §6.2 / RFC 9126 §2.3: the request object cannot be used."""

    error = "invalid_request_object"
    status_code = 400


def parameters(client: Client, token: str) -> dict[str, str]:
    """The verified authorization request parameters of `client`'s request object."""
    if not client.jwks:
        raise InvalidRequestObject("the client has no registered keys to verify a request "
                                   "object with")
    try:
        keys = KeySet.import_key_set(cast(Any, client.jwks))
    except (JoseError, ValueError, TypeError, KeyError):
        raise InvalidRequestObject("the client's registered keys are not usable") from None
    limit = policy().fapi.request_object.max_lifetime
    if not policy().fapi.request_object.require_exp:
        limit = -limit
    try:
        verified = jwt.verify(token, jwt.Kind.REQUEST_OBJECT, keys=keys,
                              client_id=client.client_id, audiences=[settings().issuer],
                              max_lifetime=limit)
    except jwt.InvalidJWT as exc:
        raise InvalidRequestObject(f"request object refused: {exc}") from None
    if not client_profile.allows_alg(client, verified.header["alg"]):
        raise InvalidRequestObject("this client's profile does not allow the object's alg")
    claims = verified.claims
    params: dict[str, str] = {}
    for name, value in claims.items():
        if name in _JWT_CLAIMS:
            continue
        if name in _NESTED:
            raise InvalidRequestObject(f"a request object cannot carry {name}")
        if name in _JSON_VALUED and isinstance(value, list | dict):
            params[name] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidRequestObject(f"request object parameter {name} must be a string")
        params[name] = str(value)
    return params
