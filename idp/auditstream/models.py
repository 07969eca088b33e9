from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class AuditStreamCursor(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy
    """How far one sink has received the audit trail: `positions` maps each writer's chain to
    the last chain_seq the sink accepted (each chain is received in order, without a gap);
    `last_seq` is the highest seq it accepted (for status only: seq is a locator, and a
    lower one may commit later on another chain). `attempts` counts the failed attempts since
    the last success (the back-off of idp.core.delivery); `next_attempt_at` is when the sink
    is due again."""

    __tablename__ = "audit_stream_cursors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sink: Mapped[str] = mapped_column(String(32), unique=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    positions: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)
