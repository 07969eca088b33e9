"""Onboarding tables: facilities and departments (maintained by admins), applications and the
single-use links sent to applicants (stored only as hashes)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp import clock
from idp.extensions import db
from idp.models_base import UTCDateTime


class Facility(db.Model):
    __tablename__ = "facilities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=lambda: clock.now())
    departments: Mapped[list[Department]] = relationship(
        back_populates="facility", order_by="Department.name")


class Department(db.Model):
    __tablename__ = "departments"
    __table_args__ = (UniqueConstraint("facility_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id", ondelete="CASCADE"),
                                             index=True)
    name: Mapped[str] = mapped_column(String(200))
    facility: Mapped[Facility] = relationship(back_populates="departments")


# Application states: email_pending (link sent, not in the queue) -> pending (in the queue)
# <-> info_requested (waiting for the applicant's reply) -> approved | rejected.
OPEN_STATES = ("pending", "info_requested")


class Application(db.Model):
    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20), index=True, default="email_pending")
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254), index=True)
    phone: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(32))
    npi: Mapped[str] = mapped_column(String(10), index=True)
    license_state: Mapped[str | None] = mapped_column(String(2), nullable=True)
    license_number: Mapped[str | None] = mapped_column(String(32), nullable=True)
    license_expires: Mapped[date | None] = mapped_column(Date, nullable=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"),
                                                      nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=lambda: clock.now())
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    registry_result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    info_request: Mapped[str | None] = mapped_column(Text, nullable=True)
    applicant_reply: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_approval_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    first_approval: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                nullable=True)
    facility: Mapped[Facility] = relationship()
    department: Mapped[Department | None] = relationship()

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.family_name}".strip()


class ApplicationLink(db.Model):
    """A link mailed to an applicant: `verify` (confirm the email) or `reply` (answer a
    request for more information). Single use, stored as SHA-256."""

    __tablename__ = "application_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(10))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
