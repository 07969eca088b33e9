"""SMART launch state: launch values the EHR registered, and the context bound to a grant."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class SmartLaunch(db.Model):
    """An EHR launch: the EHR (registered_by) registered this context for one app (client_id)
    and, when it said so, one user (subject). The launch value is stored hashed; it is single
    use (used_at) and short-lived (expires_at)."""

    __tablename__ = "smart_launches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    launch_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    registered_by: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True)
    patient: Mapped[str | None] = mapped_column(String(64), nullable=True)
    encounter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SmartContext(db.Model):
    """The launch context of one grant (its token family): returned beside the tokens of the
    code exchange and of every refresh."""

    __tablename__ = "smart_contexts"

    family_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    patient: Mapped[str | None] = mapped_column(String(64), nullable=True)
    encounter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fhir_context: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PractitionerLink(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy
    """The EHR's Practitioner resource for a clinician, found by NPI on its FHIR server
    (idp.smart.practitioners): fhirUser names it only while `status` is "resolved" for the
    account's current NPI. "missing" and "ambiguous" (zero or several matches) leave the
    clinician without fhirUser; a FHIR server that could not be asked keeps the last answer
    and records `last_error`."""

    __tablename__ = "smart_practitioner_links"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    npi: Mapped[str] = mapped_column(String(10))
    practitioner_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))   # resolved | missing | ambiguous
    matches: Mapped[int] = mapped_column(Integer, default=0)
    resolved_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
