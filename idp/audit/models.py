from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class AuditEvent(db.Model):
    """One security-relevant event. `hash` covers the event, its place in its writer's chain
    (`chain`, `chain_seq`), the other chains' heads it anchors (`anchors`, when set) and the
    previous event of its chain's hash. `seq` is a locator: unique across chains and
    increasing with insertion (the order the admin view and the stream list events in), taken
    without a lock (a sequence on PostgreSQL); it may have gaps."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_chain_position", "chain", "chain_seq",
                            unique=True),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor: Mapped[str | None] = mapped_column(String(100), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    chain: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    chain_seq: Mapped[int] = mapped_column(Integer, server_default="0")
    anchors: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class AuditHead(db.Model):
    """The head of one writer's chain (`id` = the chain): its last chain_seq and hash. Each
    process appends to a chain of its own (idp.audit.chains), so writers on different
    processes and nodes never wait for each other's head row."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
