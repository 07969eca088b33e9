"""SAML tables: registered service providers, the AuthnRequests seen (replay cache and the
pending sign-in they wait for), and the SSO sessions' SAML participants (for logout)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class SamlServiceProvider(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy
    """A service provider an administrator registered from its metadata (file or URL)."""

    __tablename__ = "saml_service_providers"

    entity_id: Mapped[str] = mapped_column(String(1024), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    metadata_xml: Mapped[str] = mapped_column(Text)
    metadata_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    nameid_format: Mapped[str] = mapped_column(String(20))  # persistent | email | transient
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SamlRequest(db.Model):  # type: ignore[name-defined]
    """One AuthnRequest (or IdP-initiated launch) received: `key` names the pending sign-in
    in the browser's continuation URL; (sp_entity_id, request_id) is unique, so a replayed
    AuthnRequest ID is refused; `answered_at` once an assertion was issued for it."""

    __tablename__ = "saml_requests"
    __table_args__ = (UniqueConstraint("sp_entity_id", "request_id",
                                       name="uq_saml_requests_sp_request"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    sp_entity_id: Mapped[str] = mapped_column(String(1024))
    request_id: Mapped[str] = mapped_column(String(256))
    acs_url: Mapped[str] = mapped_column(String(2048))
    relay_state: Mapped[str | None] = mapped_column(Text, nullable=True)
    force_authn: Mapped[bool] = mapped_column(Boolean, default=False)
    is_passive: Mapped[bool] = mapped_column(Boolean, default=False)
    acr: Mapped[str | None] = mapped_column(String(200), nullable=True)
    nameid_format: Mapped[str | None] = mapped_column(String(20), nullable=True)
    unsolicited: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SamlParticipant(db.Model):  # type: ignore[name-defined]
    """A service provider that received an assertion in SSO session `sid`: owed a
    LogoutRequest when that session ends."""

    __tablename__ = "saml_participants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # also the SessionIndex
    sid: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(index=True)
    sp_entity_id: Mapped[str] = mapped_column(String(1024))
    name_id: Mapped[str] = mapped_column(String(512))
    name_id_format: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
