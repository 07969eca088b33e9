from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class Factor(db.Model):
    """An enrolled second factor. Secrets: TOTP seed encrypted; WebAuthn public key only."""

    __tablename__ = "mfa_factors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # totp
    secret_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_totp_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # sms / email
    destination: Mapped[str | None] = mapped_column(String(254), nullable=True)
    # webauthn
    credential_id: Mapped[str | None] = mapped_column(String(1024), nullable=True, unique=True)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sign_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    transports: Mapped[list | None] = mapped_column(JSON, nullable=True)
    aaguid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    clone_warning: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class LoginAttempt(db.Model):
    """A sign-in between its password step and its second factor, or a step-up.

    The browser holds only the random id (in the signed flow cookie); codes are bound to it.
    """

    __tablename__ = "mfa_login_attempts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))  # login | stepup
    amr: Mapped[list] = mapped_column(JSON, default=list)
    target_acr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    challenge: Mapped[str | None] = mapped_column(String(200), nullable=True)  # webauthn
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OneTimeCode(db.Model):
    """An SMS or email code: stored hashed, single use, bound to one login attempt."""

    __tablename__ = "mfa_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_id: Mapped[str] = mapped_column(String(64), index=True)
    factor_id: Mapped[int] = mapped_column(ForeignKey("mfa_factors.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RecoveryCode(db.Model):
    __tablename__ = "mfa_recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
