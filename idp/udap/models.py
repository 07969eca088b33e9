"""UDAP tables: trust communities added by operators (beside those of policies/udap.toml),
the clients registered through UDAP with the certificate that vouched for them, and the jti
of software statements already seen (single use)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class UdapCommunity(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's dynamic base
    """A trust community: its anchors (root CA certificates), intermediates and CRLs, PEM."""

    __tablename__ = "udap_communities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    anchors_pem: Mapped[str] = mapped_column(Text)
    intermediates_pem: Mapped[str] = mapped_column(Text, default="")
    crls_pem: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UdapClient(db.Model):  # type: ignore[name-defined]
    """A client registered through UDAP: its `iss` (the certificate's SAN URI; the same iss
    registering again modifies it), the community and certificate that vouched for it."""

    __tablename__ = "udap_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), unique=True)
    iss: Mapped[str] = mapped_column(String(512), unique=True)
    community: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(512))       # the certificate's subject DN
    serial: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UdapUsedJti(db.Model):  # type: ignore[name-defined]
    """jti of UDAP software statements already seen, by issuer (hashed), until expires_at."""

    __tablename__ = "udap_used_jti"

    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
