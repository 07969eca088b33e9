from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, foreign, mapped_column, relationship

from idp.accounts.models import User
from idp.extensions import db
from idp.models_base import UTCDateTime


class EpcsPermission(db.Model):
    """A user's EPCS permission (1311.125): proposed by one admin, approved by another, then
    held until revoked. A proposal withdrawn or refused is revoked without approval."""

    __tablename__ = "epcs_permissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    proposed_by: Mapped[int] = mapped_column(Integer)
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    approved_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship(User, foreign_keys=[user_id], lazy="joined")
    proposer: Mapped[User] = relationship(
        User, primaryjoin=lambda: foreign(EpcsPermission.proposed_by) == User.id,
        lazy="joined", viewonly=True)
    approver: Mapped[User | None] = relationship(
        User, primaryjoin=lambda: foreign(EpcsPermission.approved_by) == User.id,
        lazy="joined", viewonly=True)

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked" if self.approved_at is not None else "withdrawn"
        return "active" if self.approved_at is not None else "proposed"


class EpcsCeremony(db.Model):
    """One signing ceremony: started at /authorize (acr_values epcs), finished by a fresh
    password and hardware factor, consumed by exactly one authorization response."""

    __tablename__ = "epcs_ceremonies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_key: Mapped[str] = mapped_column(String(64))
    binding_message: Mapped[str] = mapped_column(String(256))
    next_url: Mapped[str] = mapped_column(String(4096))
    attempt_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    amr: Mapped[list] = mapped_column(JSON, default=list)
    # The prescriptions signed (RFC 9396 authorization_details, idp.epcs.details), their
    # SHA-256 (JCS, hex) and the grant family of the code the ceremony served (the tokens).
    authorization_details: Mapped[list | None] = mapped_column(JSON, nullable=True)
    details_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    family_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class EpcsKey(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy
    """A WebAuthn credential enrolled as an EPCS hard token (1311.115(b)): its attestation was
    verified at enrolment (policies/epcs_keys.toml). What the attestation said is kept, so the
    rule can be applied again at every ceremony (a model taken off the list stops counting)
    and an auditor can see why the key was accepted."""

    __tablename__ = "epcs_keys"

    factor_id: Mapped[int] = mapped_column(
        ForeignKey("mfa_factors.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    aaguid: Mapped[str] = mapped_column(String(36))
    model: Mapped[str] = mapped_column(String(200))
    attestation_fmt: Mapped[str] = mapped_column(String(32))
    attestation_verified: Mapped[bool] = mapped_column(Boolean)
    # SHA-256 (hex) of the attestation certificate (x5c[0]) the key presented.
    attestation_cert_sha256: Mapped[str] = mapped_column(String(64))
    attachment: Mapped[str | None] = mapped_column(String(16), nullable=True)
    backup_eligible: Mapped[bool] = mapped_column(Boolean)
    backup_state: Mapped[bool] = mapped_column(Boolean)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeaRegistration(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy
    """The practitioner's DEA registration as identity proofing recorded it (1311.105/.110):
    the number and its expiry, who checked it and when. An expired registration suspends
    EPCS signing (1311.125: the registration must be current), and a prescription naming
    another DEA number is refused."""

    __tablename__ = "epcs_dea_registrations"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    dea_number: Mapped[str] = mapped_column(String(9))
    expires_on: Mapped[date] = mapped_column(Date)
    checked_by: Mapped[str] = mapped_column(String(200))
    recorded_by: Mapped[str] = mapped_column(String(100))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
