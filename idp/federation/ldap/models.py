"""The link between a local account and its directory entry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp import clock
from idp.extensions import db
from idp.models_base import UTCDateTime


class LdapLink(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's dynamic base
    """An account whose password the directory checks. `guid` (objectGUID / entryUUID) is the
    link key: a DN changes when a person moves OU, the GUID does not."""

    __tablename__ = "ldap_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         unique=True)
    guid: Mapped[str] = mapped_column(String(64), unique=True)
    dn: Mapped[str] = mapped_column(Text)
    employee_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The role the directory's groups ask for; held back (pending role) while it is clinical
    # and the account has no verified NPI and license.
    directory_role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # An NPI the directory holds: a hint for the verifier, never trusted as verified.
    directory_npi: Mapped[str | None] = mapped_column(String(10), nullable=True)
    # Disabled, locked or gone in the directory at the last look (sync or sign-in).
    directory_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=lambda: clock.now())
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
