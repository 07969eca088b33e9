from __future__ import annotations

import hmac
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.util import scope_to_list
from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp import clock
from idp.core.crypto import digest
from idp.extensions import db
from idp.models_base import UTCDateTime
from idp.oidc.registry import registry

if TYPE_CHECKING:
    from idp.accounts.models import User

LOOPBACK_HOSTS = ("127.0.0.1", "::1")


def _loopback_without_port(uri: str) -> str | None:
    """An http loopback IP-literal URI with its port removed; None for any other URI."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        return None
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS or parts.fragment:
        return None
    if "@" in parts.netloc:  # userinfo: not the registered URI whatever the port
        return None
    host = "[::1]" if parts.hostname == "::1" else parts.hostname
    return urlunsplit(("http", host, parts.path, parts.query, ""))


class Client(db.Model, ClientMixin):
    __tablename__ = "oauth_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    client_name: Mapped[str] = mapped_column(String(200))
    redirect_uris: Mapped[list] = mapped_column(JSON, default=list)
    post_logout_redirect_uris: Mapped[list] = mapped_column(JSON, default=list)
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(500), nullable=True)
    grant_types: Mapped[list] = mapped_column(JSON, default=list)
    response_types: Mapped[list] = mapped_column(JSON, default=list)
    scope: Mapped[str] = mapped_column(Text, default="openid")
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(40))
    jwks: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    id_token_signed_response_alg: Mapped[str | None] = mapped_column(String(10), nullable=True)
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    require_pkce: Mapped[bool] = mapped_column(Boolean, default=True)
    loopback_any_port: Mapped[bool] = mapped_column(Boolean, default=False)
    introspect_any: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Token lifetimes in seconds; NULL = the default of policies/tokens.toml.
    access_token_lifetime: Mapped[int | None] = mapped_column(Integer, nullable=True)
    id_token_lifetime: Mapped[int | None] = mapped_column(Integer, nullable=True)
    refresh_token_lifetime: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # RFC 7591 software statement the client registered with (returned unmodified).
    software_statement: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What a self-registered client asked for beyond policies/scopes.toml [grants] and waits
    # for an admin to approve (idp/admin/approval.py); NULL / false / NULL when nothing waits.
    pending_scope: Mapped[str | None] = mapped_column(Text, nullable=True)
    pending_grant_types: Mapped[list | None] = mapped_column(JSON, nullable=True)
    pending_introspect_any: Mapped[bool] = mapped_column(Boolean, default=False,
                                                         server_default="0")
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # RFC 9126, RFC 9449 and the client profile of policies/fapi.toml (idp.oidc.client_profile)
    profile: Mapped[str | None] = mapped_column(String(20), nullable=True)
    require_pushed_authorization_requests: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="0")
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(Boolean, default=False,
                                                           server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=lambda: clock.now())

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    @property
    def pending(self) -> bool:
        """Does a request for scopes, grant types or introspect-any wait for an admin?"""
        return bool(self.pending_scope or self.pending_grant_types or
                    self.pending_introspect_any)

    @property
    def client_metadata(self) -> dict:
        return {"id_token_signed_response_alg": self.id_token_signed_response_alg}

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # OIDC requires redirect_uri on every request: no default.
        return None

    def get_allowed_scope(self, scope: str) -> str:
        if not scope:
            return ""
        refused = set(self.unregistered_scopes(scope))
        return " ".join(s for s in scope_to_list(scope) if s not in refused)

    def unregistered_scopes(self, scope: str | None) -> list[str]:
        """The requested scopes this client is not registered for (a scope of a feature's
        open family, e.g. SMART clinical, counts as registered when a registered one covers
        it)."""
        allowed = set(scope_to_list(self.scope) or [])
        wanted = [s for s in scope_to_list(scope) or [] if s not in allowed]
        if not wanted:
            return []
        reg = registry()
        return [s for s in wanted if not reg.covered(s, allowed)]

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match; RFC 8252 §7.3 loopback rule (any port) only when enabled."""
        if redirect_uri in self.redirect_uris:
            return True
        if not self.loopback_any_port:
            return False
        asked = _loopback_without_port(redirect_uri)
        return asked is not None and any(
            asked == _loopback_without_port(r) for r in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.client_secret_hash or not isinstance(client_secret, str):
            return False
        return hmac.compare_digest(self.client_secret_hash, digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


class AuthorizationCode(db.Model):
    __tablename__ = "oauth_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(Text, nullable=True)
    code_challenge: Mapped[str | None] = mapped_column(String(128), nullable=True)
    code_challenge_method: Mapped[str | None] = mapped_column(String(10), nullable=True)
    # RFC 9449 §10: the DPoP key the code is bound to (dpop_jkt, or the proof at PAR)
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), nullable=True)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    acr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    amr: Mapped[list] = mapped_column(JSON, default=list)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # loaded with the code in one statement: the token request needs both
    user: Mapped[User] = relationship("User", lazy="joined")

    # Authlib's AuthorizationCodeMixin / OIDC AuthorizationCodeMixin
    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())

    def get_acr(self) -> str | None:
        return self.acr

    def get_amr(self) -> list[str]:
        return list(self.amr or [])


class AccessTokenRecord(db.Model):
    """What the IdP remembers of a JWT access token it issued, so it can be revoked."""

    __tablename__ = "oauth_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True)
    family_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    scope: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # loaded with the record in one statement: userinfo and introspection need both
    user: Mapped[User | None] = relationship("User", lazy="joined")


class RevocationEpoch(db.Model):  # type: ignore[name-defined]
    """One row: a counter every token revocation adds one to in its own transaction, so it
    moves exactly when a revocation becomes visible. Nodes compare it with the value their
    cache of access-token records was filled under (idp.oidc.revocation_cache)."""

    __tablename__ = "oauth_revocation_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)


class RefreshToken(db.Model):
    """Opaque refresh token, stored hashed. Tokens rotated from one grant share a family.
    `session_bound`: issued without offline_access, valid only while the SSO session `sid`
    lives (docs/refresh-tokens.md); an offline token outlives its session."""

    __tablename__ = "oauth_refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    scope: Mapped[str] = mapped_column(Text)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    acr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    amr: Mapped[list] = mapped_column(JSON, default=list)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    session_bound: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # The DPoP key (RFC 7638 thumbprint) a public client's refresh token is bound to (RFC 9449)
    jkt: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # loaded with the token in one statement: the refresh grant needs both
    user: Mapped[User] = relationship("User", lazy="joined")

    # Authlib's TokenMixin, as far as the refresh and revocation endpoints use it
    def get_scope(self) -> str:
        return self.scope

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self) -> bool:
        return self.expires_at <= clock.now()


class Consent(db.Model):
    __tablename__ = "oauth_consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UsedAssertion(db.Model):
    """jti of private_key_jwt client assertions already seen (RFC 7523 replay protection)."""

    __tablename__ = "oauth_used_assertions"

    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class BackchannelLogout(db.Model):
    """One logout token owed to one relying party for one ended SSO session (OpenID Connect
    Back-Channel Logout 1.0). The token itself is signed afresh at each attempt (it lives two
    minutes); this row records the attempts. Delivered: delivered_at set. Abandoned after the
    last attempt: next_attempt_at NULL, delivered_at NULL. last_error is short and holds no
    token or secret ("connection refused", "HTTP 500", ...)."""

    __tablename__ = "oauth_backchannel_logouts"
    __table_args__ = (UniqueConstraint("client_id", "sid", name="uq_backchannel_client_sid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    sid: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(64))  # the user's `sub`
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True,
                                                             index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)


class PushedRequest(db.Model):  # type: ignore[name-defined]
    """A pushed authorization request (RFC 9126): its parameters until the authorization
    response that uses them (single use, short-lived)."""

    __tablename__ = "oauth_pushed_requests"

    uri_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UsedDpopProof(db.Model):  # type: ignore[name-defined]
    """jti of DPoP proofs already seen (RFC 9449 §11.1 replay), kept past the iat window.
    Also the store of other single-use jtis that need no more than this: the key is the hash
    of a namespaced jti ("dpop:<jkt>:<jti>"; "upstream-logout:<upstream id>:<jti>", the
    logout tokens of idp.federation.upstream, kept until their exp), and any expired row may
    be deleted by whoever purges."""

    __tablename__ = "oauth_dpop_proofs"

    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
