from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.accounts.models import User
from idp.extensions import db
from idp.models_base import UTCDateTime


class SsoSession(db.Model):
    """One sign-in at the IdP. The cookie holds a random 256-bit value; only its hash is here.
    `device_hash`: SHA-256 of the browser's device cookie (idp_device) at sign-in; the "new
    device" alert compares it (idp.security.alerts). None for sessions from before it existed."""

    __tablename__ = "sso_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # public `sid`
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    acr: Mapped[str] = mapped_column(String(100))
    amr: Mapped[list] = mapped_column(JSON, default=list)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    device_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)

    user: Mapped[User] = relationship(lazy="joined")
