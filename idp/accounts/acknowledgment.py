"""The daily security acknowledgment, once per calendar day in the facility's time zone."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import select
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
    ack = policy().acknowledgment
    return db.session.execute(select(Acknowledgment.id).where(
        Acknowledgment.user_id == user.id, Acknowledgment.day == today(),
        Acknowledgment.version == ack.version).limit(1)).first() is None


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
