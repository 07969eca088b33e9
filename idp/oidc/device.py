"""Device authorization grant (RFC 8628) storage and rules: a device_code for the device to
poll with, a user_code the person enters at /device after the normal sign-in. Both are stored
only as hashes. A pair lives policies/device.toml `expires_in`; a device polling faster than
its `interval` is told slow_down and its interval grows by `slow_down_step` (§3.5); an
allowed grant is exchanged once."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import (
    JSON,
    CursorResult,
    ForeignKey,
    Integer,
    String,
    Text,
    Update,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from idp import clock
from idp.accounts.models import User
from idp.context import policy
from idp.core.crypto import digest
from idp.extensions import db
from idp.models_base import UTCDateTime
from idp.oidc.auth_context import AuthContext

PENDING, ALLOWED, DENIED, USED = "pending", "allowed", "denied", "used"
# Authlib's user codes: two groups of four letters from BCDFGHJKLMNPQRSTVWXZ.
USER_CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{8}")


class DeviceGrant(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's base
    __tablename__ = "oauth_device_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_code_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    interval: Mapped[int] = mapped_column(Integer)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                                nullable=True)
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    amr: Mapped[list | None] = mapped_column(JSON, nullable=True)

    # Authlib's DeviceCredentialMixin, as far as DeviceCodeGrant uses it
    def get_client_id(self) -> str:
        return self.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return self.expires_at <= clock.now()


def normalize(user_code: str) -> str | None:
    """The user code as typed (any case, with or without the dash and spaces), or None when
    it cannot be one of ours."""
    if not isinstance(user_code, str) or len(user_code) > 32:
        return None
    code = re.sub(r"[\s-]", "", user_code).upper()
    return code if USER_CODE.fullmatch(code) else None


def create(client_id: str, scope: str, device_code: str, user_code: str) -> DeviceGrant:
    now = clock.now()
    rules = policy().device
    item = DeviceGrant(device_code_hash=digest(device_code),
                       user_code_hash=digest(normalize(user_code) or user_code),
                       client_id=client_id, scope=scope or "", created_at=now,
                       expires_at=now + timedelta(seconds=rules.expires_in),
                       interval=rules.interval, status=PENDING)
    db.session.add(item)
    return item


def by_device_code(device_code: str) -> DeviceGrant | None:
    if not isinstance(device_code, str) or not device_code or len(device_code) > 128:
        return None
    return db.session.execute(select(DeviceGrant).where(
        DeviceGrant.device_code_hash == digest(device_code))).scalar_one_or_none()


def pending_by_user_code(user_code: str) -> DeviceGrant | None:
    """The live, undecided grant of this user code, or None."""
    code = normalize(user_code)
    if code is None:
        return None
    item = db.session.execute(select(DeviceGrant).where(
        DeviceGrant.user_code_hash == digest(code))).scalar_one_or_none()
    if item is None or item.status != PENDING or item.is_expired():
        return None
    return item


def decide(item: DeviceGrant, user: User, ctx: AuthContext, allow: bool) -> bool:
    """The person's answer, once (a concurrent second answer changes nothing: False)."""
    values: dict = {"status": ALLOWED if allow else DENIED, "user_id": user.id}
    if allow:
        values.update(auth_time=ctx.auth_time, acr=ctx.acr, amr=list(ctx.amr))
    return bool(_changed(update(DeviceGrant).where(
        DeviceGrant.id == item.id, DeviceGrant.status == PENDING).values(**values)))


def polled_too_fast(item: DeviceGrant) -> bool:
    """Record this poll; True (and the interval grown) when it came before the interval had
    passed since the last one. Atomic, so two polls at once cannot both pass."""
    now = clock.now()
    on_time = _changed(update(DeviceGrant).where(
        DeviceGrant.id == item.id,
        or_(DeviceGrant.last_poll_at.is_(None),
            DeviceGrant.last_poll_at <= now - timedelta(seconds=item.interval)))
        .values(last_poll_at=now))
    if on_time:
        return False
    db.session.execute(update(DeviceGrant).where(DeviceGrant.id == item.id).values(
        interval=DeviceGrant.interval + policy().device.slow_down_step, last_poll_at=now)
        .execution_options(synchronize_session=False))
    return True


def claim(item: DeviceGrant) -> bool:
    """Consume an allowed grant: it is exchanged for tokens once."""
    return bool(_changed(update(DeviceGrant).where(
        DeviceGrant.id == item.id, DeviceGrant.status == ALLOWED).values(status=USED)))


def _changed(statement: Update) -> int:
    """Rows an UPDATE changed (in the caller's transaction)."""
    result = cast(CursorResult, db.session.execute(
        statement.execution_options(synchronize_session=False)))
    return result.rowcount
