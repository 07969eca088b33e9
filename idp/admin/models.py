"""Admin console tables: initial access tokens for dynamic client registration (RFC 7591),
and registration access tokens of registered clients (RFC 7592)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class InitialAccessToken(db.Model):
    """Lets its holder register clients at /register: stored hashed, expires, limited uses."""

    __tablename__ = "registration_initial_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    uses_left: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)


class RegistrationAccessToken(db.Model):
    """The RFC 7592 token a dynamically registered client manages its registration with."""

    __tablename__ = "registration_access_tokens"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
