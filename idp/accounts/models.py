from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp import clock
from idp.extensions import db
from idp.models_base import UTCDateTime


def new_subject() -> str:
    return str(uuid.uuid4())


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # `sub`: stable, opaque, never the username (usernames can change).
    subject: Mapped[str] = mapped_column(String(64), unique=True, default=new_subject)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    npi: Mapped[str | None] = mapped_column(String(10), unique=True, nullable=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    phone_number: Mapped[str | None] = mapped_column(String(32), nullable=True)
    phone_number_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    given_name: Mapped[str] = mapped_column(String(100), default="")
    family_name: Mapped[str] = mapped_column(String(100), default="")
    role: Mapped[str] = mapped_column(String(32))
    facility: Mapped[str | None] = mapped_column(String(200), nullable=True)
    department: Mapped[str | None] = mapped_column(String(200), nullable=True)
    license_state: Mapped[str | None] = mapped_column(String(2), nullable=True)
    # Onboarding (idp/onboarding): the license a verifier checked, when it runs out, whether
    # the 30-day warning went out, and whether expiry took the clinical role out of tokens.
    license_number: Mapped[str | None] = mapped_column(String(32), nullable=True)
    license_expires: Mapped[date | None] = mapped_column(Date, nullable=True)
    license_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    clinical_suspended: Mapped[bool] = mapped_column(Boolean, default=False,
                                                     server_default="0")
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    temporary_password_expires_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True)
    # Lockout: changed only by single atomic UPDATE statements (see accounts/lockout.py).
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=lambda: clock.now())
    # The account's language (a code of web.toml `locales`; docs/i18n.md), None: the
    # browser's. Pages once signed in, mails and texts to the account, the `locale` claim.
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.given_name, self.family_name) if p)

    def get_user_id(self) -> str:
        """Authlib asks for the user id to put in `sub`: the opaque subject."""
        return self.subject


class PasswordHistory(db.Model):
    """Hashes of earlier passwords, for the "not one of the last N" rule."""

    __tablename__ = "password_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PasswordResetToken(db.Model):
    """A forgot-password link: single use, stored hashed, superseded by a newer one."""

    __tablename__ = "password_reset_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Acknowledgment(db.Model):
    """A daily security acknowledgment, per user and calendar day in the facility's zone."""

    __tablename__ = "acknowledgments"
    __table_args__ = (UniqueConstraint("user_id", "day", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    day: Mapped[str] = mapped_column(String(10))
    version: Mapped[str] = mapped_column(String(64))
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EmailChange(db.Model):
    """A new email address waiting for its owner to follow the verification link."""

    __tablename__ = "email_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    new_email: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
