"""The daily security acknowledgment, once per calendar day in the facility's time zone."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.accounts.models import Acknowledgment, User
from idp.audit import service as audit
from idp.context import policy
from idp.extensions import db


def today() -> str:
    zone = ZoneInfo(policy().acknowledgment.timezone)
    return clock.now().astimezone(zone).date().isoformat()


def needed(user: User) -> bool:
    return db.session.connection().execute(_ACCEPTED, {
        "user_id": user.id, "day": today(), "version": policy().acknowledgment.version,
    }).first() is None


# Built once: every refresh-token grant asks (the gate holds for refreshes too).
_ACCEPTED = select(Acknowledgment.id).where(
    Acknowledgment.user_id == bindparam("user_id"), Acknowledgment.day == bindparam("day"),
    Acknowledgment.version == bindparam("version")).limit(1)


def accept(user: User) -> None:
    version = policy().acknowledgment.version
    try:
        with db.session.begin_nested():
            db.session.add(Acknowledgment(user_id=user.id, day=today(), version=version,
                                          accepted_at=clock.now()))
    except IntegrityError:
        return  # accepted already (a second tab)
    audit.record("acknowledgment.accepted", user_id=user.id,
                 version=version)
