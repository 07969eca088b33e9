"""Upstream providers, the identities linked to local accounts, and the short-lived state of
a sign-in at an upstream."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class Upstream(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy
    """One upstream OpenID Provider. The client secret is kept encrypted (idp.core.crypto,
    key IDP_DATA_KEY or keys/data-encryption.key), or not at all when `secret_env` names the
    environment variable that holds it. Discovery and JWKS are cached here (every node
    shares them)."""

    __tablename__ = "upstreams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret_env: Mapped[str | None] = mapped_column(String(100), nullable=True)
    scope: Mapped[str] = mapped_column(String(500))
    link_by: Mapped[str] = mapped_column(String(10))            # email | upn | npi
    allowed_domains: Mapped[list] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    discovery: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    discovery_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    jwks: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    jwks_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # How our token requests authenticate: "client_secret" (the operator's upstreams), or the
    # name of a feature's idp.core.brokering.ClientAuth for an upstream that feature enrolled
    # ("udap": UDAP Tiered OAuth, private_key_jwt with the server certificate's x5c).
    client_auth: Mapped[str] = mapped_column(String(20), default="client_secret",
                                             server_default="client_secret")


class UpstreamLink(db.Model):  # type: ignore[name-defined]
    """A local account's identity at an upstream: the key is (issuer, subject), never an
    email."""

    __tablename__ = "upstream_links"
    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_upstream_links_iss_sub"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id", ondelete="CASCADE"),
                                             index=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    how: Mapped[str] = mapped_column(String(20))                # proven | auto | onboarding
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UpstreamFlow(db.Model):  # type: ignore[name-defined]
    """One trip to an upstream's authorization endpoint: the state (stored as SHA-256, also
    held in the browser's flow cookie), the nonce and the PKCE verifier (encrypted); single
    use."""

    __tablename__ = "upstream_flows"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id", ondelete="CASCADE"),
                                             index=True)
    nonce: Mapped[str] = mapped_column(String(100))
    verifier_encrypted: Mapped[str] = mapped_column(Text)
    next_url: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(20))            # login
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UpstreamPending(db.Model):  # type: ignore[name-defined]
    """An upstream sign-in of an unknown (issuer, subject), waiting for the person to prove an
    existing account or to apply (onboarding). Never linked by itself."""

    __tablename__ = "upstream_pending"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)   # SHA-256 of the handle
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id", ondelete="CASCADE"),
                                             index=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    claims: Mapped[dict] = mapped_column(JSON, default=dict)   # names and email, shown back
    upstream_sid: Mapped[str | None] = mapped_column(String(255), nullable=True)
    next_url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    application_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class UpstreamSession(db.Model):  # type: ignore[name-defined]
    """Which of our SSO sessions an upstream sign-in started, with the upstream's sid: its
    back-channel logout token ends ours, our logout can offer to end its session."""

    __tablename__ = "upstream_sessions"

    sso_session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id", ondelete="CASCADE"),
                                             index=True)
    subject: Mapped[str] = mapped_column(String(255), index=True)
    upstream_sid: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    id_token_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
