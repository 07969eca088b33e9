"""SCIM tables: the bearer tokens HR connectors use, and what SCIM knows of an account beyond
the users table (externalId, the attributes it stores as sent, the soft delete)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.models_base import UTCDateTime


class ScimToken(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's dynamic base
    """A provisioning connector's bearer token: only its SHA-256 is kept."""

    __tablename__ = "scim_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ScimProfile(db.Model):  # type: ignore[name-defined]
    """One account as SCIM sees it. `document` holds the attributes stored as sent (the ones
    with no column of their own in users); `requested_role` a clinical role waiting for the
    NPI and license to be verified; `deleted_at` the soft delete (the account stays, disabled,
    for the audit trail)."""

    __tablename__ = "scim_profiles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    employee_number: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    requested_role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ProvisionedGroup(db.Model):  # type: ignore[name-defined]
    """A group a connector pushed (Entra ID, Okta). One whose displayName scim.toml [groups]
    maps to a role gives its members that role; any other is kept as sent, without effect."""

    __tablename__ = "scim_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    display_key: Mapped[str] = mapped_column(String(256), unique=True)  # lower-case
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GroupMember(db.Model):  # type: ignore[name-defined]
    __tablename__ = "scim_group_members"

    group_id: Mapped[str] = mapped_column(ForeignKey("scim_groups.id", ondelete="CASCADE"),
                                          primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True, index=True)
    display: Mapped[str | None] = mapped_column(String(256), nullable=True)  # as sent
