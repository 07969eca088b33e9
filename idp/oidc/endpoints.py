"""Revocation (RFC 7009) and introspection (RFC 7662) over our two token kinds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnsupportedTokenTypeError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import settings
from idp.extensions import db
from idp.oidc import tokens
from idp.oidc.clients import AUTH_METHODS, CONFIDENTIAL_METHODS
from idp.oidc.models import Client, RefreshToken


class UnsupportedTokenType(UnsupportedTokenTypeError):
    """RFC 7009 §2.2.1 error, with the 400 status of RFC 6749 §5.2 (Authlib answers 401)."""

    status_code = 400


def _check_params(request: object) -> None:
    if "token" not in request.form:
        raise InvalidRequestError("the token parameter is required")
    hint = request.form.get("token_type_hint")
    if hint and hint not in ("access_token", "refresh_token"):
        raise UnsupportedTokenType()


@dataclass
class AccessToken:
    """A verified JWT access token with its revocation record (the row of
    tokens.verify_access_token(with_user=False)), in Authlib's token shape."""

    claims: dict
    record: Any

    def check_client(self, client: Client) -> bool:
        return self.record.client_id == client.client_id

    def is_expired(self) -> bool:
        return self.record.expires_at <= clock.now()

    def is_revoked(self) -> bool:
        return self.record.revoked_at is not None

    def get_scope(self) -> str:
        return self.record.scope


def _find(token: str, hint: str | None) -> AccessToken | RefreshToken | None:
    if not isinstance(token, str):
        return None
    order = ("refresh_token", "access_token") if hint == "refresh_token" else \
        ("access_token", "refresh_token")
    for kind in order:
        if kind == "refresh_token":
            found = tokens.find_refresh_token(token)
            if found is not None:
                return found
        else:
            try:
                claims, record = tokens.verify_access_token(token, check_revoked=False,
                                                            with_user=False)
            except tokens.InvalidToken:
                continue
            return AccessToken(claims, record)
    return None


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = list(AUTH_METHODS)

    def check_params(self, request: object, client: Client) -> None:
        _check_params(request)

    def authenticate_token(self, request: object, client: Client) -> object | None:
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        # A token of another client is treated like an unknown one (RFC 7009 §2.2): no
        # error, nothing revoked, and no oracle telling the caller the token exists.
        return token if token is not None and token.check_client(client) else None

    def query_token(self, token_string: str, token_type_hint: str | None) -> object | None:
        return _find(token_string, token_type_hint)

    def revoke_token(self, token: object, request: object) -> None:
        if isinstance(token, RefreshToken):
            tokens.revoke_family(token.family_id)  # the grant goes with its refresh token
            kind, user_id = "refresh_token", token.user_id
        else:
            tokens.revoke_access_token(token.record.jti)
            kind, user_id = "access_token", token.record.user_id
        audit.record("token.revoked", user_id=user_id, client_id=request.client.client_id,
                     kind=kind)
        db.session.commit()


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = list(CONFIDENTIAL_METHODS)

    def check_params(self, request: object, client: Client) -> None:
        _check_params(request)

    def query_token(self, token_string: str, token_type_hint: str | None) -> object | None:
        return _find(token_string, token_type_hint)

    def check_permission(self, token: object, client: Client, request: object) -> bool:
        """A client may introspect its own tokens; resource servers flagged by an admin may
        introspect any."""
        return client.introspect_any or token.check_client(client)

    def introspect_token(self, token: object) -> dict:
        return introspection_body(token)


def introspection_body(token: AccessToken | RefreshToken) -> dict:
    """RFC 7662 §2.2 answer for an active token (also given in front of Flask,
    idp.oidc.fast_lane)."""
    if isinstance(token, RefreshToken):
        user = db.session.get(User, token.user_id)
        return {
            "active": True, "token_type": "refresh_token", "scope": token.scope,
            "client_id": token.client_id, "sub": user.subject if user else None,
            "username": user.username if user else None, "iss": settings().issuer,
            "exp": int(token.expires_at.timestamp()),
            "iat": int(token.issued_at.timestamp()),
            **({"cnf": {"jkt": token.jkt}} if token.jkt else {}),
        }
    claims = token.claims
    # RFC 9449 §6.2: a DPoP-bound token's key (cnf) and token_type
    body = {"active": True, "token_type": "DPoP" if "cnf" in claims else "Bearer"}
    for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti",
                 "auth_time", "acr", "amr", "sid", "cnf"):
        if name in claims:
            body[name] = claims[name]
    if token.record.username is not None:  # the record's row carries its user's username
        body["username"] = token.record.username
    return body
