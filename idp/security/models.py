"""Security alerts: what security staff or the user should look at (idp.security.alerts raises
them; the admin console works them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class SecurityAlert(db.Model):
    """Something security staff or the user should look at: state new | acknowledged |
    resolved."""

    __tablename__ = "security_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    state: Mapped[str] = mapped_column(String(16), default="new")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    updated_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
