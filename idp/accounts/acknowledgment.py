"""The daily security acknowledgment, once per calendar day in the facility's time zone."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import g, has_app_context
from sqlalchemy import ColumnElement, and_, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute

from idp import clock
from idp.accounts.models import Acknowledgment, User
from idp.audit import service as audit
from idp.context import policy
from idp.extensions import db


def today() -> str:
    zone = ZoneInfo(policy().acknowledgment.timezone)
    return clock.now().astimezone(zone).date().isoformat()


_SEEN = "idp_acknowledged"  # flask.g: (user_id, day, version) seen accepted in this request


def needed(user: User) -> bool:
    key = (user.id, today(), policy().acknowledgment.version)
    if has_app_context() and key in g.get(_SEEN, ()):
        return False
    return db.session.connection().execute(_ACCEPTED, {
        "user_id": key[0], "day": key[1], "version": key[2]}).first() is None


def accepted_clause(
        user_id: ColumnElement[int] | InstrumentedAttribute[int]) -> ColumnElement[bool]:
    """For a read that has the user at hand (the sign-in's attempt, idp.mfa.flow): the join
    condition of today's acknowledgment of the current version, to outer-join and hand to
    `seen`."""
    return and_(Acknowledgment.user_id == user_id, Acknowledgment.day == today(),
                Acknowledgment.version == policy().acknowledgment.version)


def seen(user: User, accepted: Acknowledgment | None) -> None:
    """An acknowledgment read with the user (accepted_clause): `needed` answers from it for
    the rest of this request instead of asking again. Only an acceptance is kept: it is never
    withdrawn, while one made meanwhile in another tab must not be missed."""
    if accepted is not None and has_app_context():
        g.setdefault(_SEEN, set()).add((user.id, accepted.day, accepted.version))


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
