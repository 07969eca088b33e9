from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class BreakglassEpisode(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy
    """One request to break the glass, from the request page to the review.

    Requested (created_at, the reason and justification once entered), re-authenticated
    (verified_at: password and second factor again; the entitlement runs from then until
    ends_at), used by one authorization response (used_at, bound to the grant: family_id),
    ended (ended_at: recorded when the entitlement ran out), reviewed by a privacy officer
    (reviewed_at, reviewed_by, outcome, note) before review_due_at, escalated when it was not."""

    __tablename__ = "breakglass_episodes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    sid: Mapped[str] = mapped_column(String(64), index=True)   # the SSO session marked
    request_key: Mapped[str] = mapped_column(String(64))
    next_url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)   # of the request itself
    reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    justification: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempt_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    amr: Mapped[list] = mapped_column(JSON, default=list)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    family_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    review_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reviewed_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)
    review_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
