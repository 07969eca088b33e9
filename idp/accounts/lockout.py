"""Account lockout: N consecutive failures lock the account for a while.

Counters change only through single UPDATE statements whose WHERE clause refuses a locked row,
so concurrent attempts on any number of nodes can neither exceed the limit nor skip the lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, exists, or_, update
from sqlalchemy.orm import InstrumentedAttribute

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy
from idp.extensions import db
from idp.security import alerts


@dataclass(frozen=True)
class Failure:
    count: int
    locked_until: datetime | None
    newly_locked: bool


def is_locked(user: User) -> bool:
    return user.locked_until is not None and user.locked_until > clock.now()


def _unlocked(now: datetime) -> ColumnElement[bool]:
    return or_(User.locked_until.is_(None), User.locked_until <= now)


def register_failure(user: User) -> Failure | None:
    """Count one failure; lock at the limit. None when the account was already locked.
    The caller records the audit event and commits."""
    rules = policy().lockout
    now = clock.now()
    until = now + timedelta(seconds=rules.lock_duration)
    lock_expired = and_(User.locked_until.is_not(None), User.locked_until <= now)
    new_count = case((lock_expired, 1), else_=User.failed_logins + 1)
    row = db.session.execute(
        update(User)
        .where(User.id == user.id, _unlocked(now))
        .values(failed_logins=new_count,
                locked_until=case((new_count >= rules.max_failures, until), else_=None))
        .returning(User.failed_logins, User.locked_until)
        .execution_options(synchronize_session=False)).first()
    if row is not None and row[1] is not None:
        _record_lockout(user, row[0], clock.aware(row[1]))
    # Not committed here: the caller commits the count together with its audit event, so a
    # database failure in between leaves neither (all or nothing).
    if row is None:
        return None
    db.session.refresh(user)
    return Failure(row[0], clock.aware(row[1]), row[1] is not None)


def _record_lockout(user: User, failures: int, until: datetime) -> None:
    """Audit the lockout in the transaction that locks and raise the repeated-lockout alerts it
    completes (policies/alerts.toml)."""
    from flask import has_request_context, request


    ip = request.remote_addr if has_request_context() else None
    audit.record("account.locked", user_id=user.id, failures=failures,
                 locked_until=until.isoformat())
    alerts.check_lockout(user, ip)


def not_locked(
        user_id: ColumnElement[int] | InstrumentedAttribute[int], now: datetime,
) -> ColumnElement[bool]:
    """A condition for a statement about something of the account `user_id` (a sign-in's
    completion, idp.mfa.flow): the account is not locked now. Part of that one statement, so
    a lock committed by concurrent failures is seen atomically, like register_success's."""
    return ~exists().where(User.id == user_id, User.locked_until.is_not(None),
                           User.locked_until > now)


def owes_reset(user: User) -> bool:
    """The account as read shows failures or a lock to clear (register_success's work)."""
    return bool(user.failed_logins) or user.locked_until is not None


def register_success(user: User) -> bool:
    """Reset the count. False when a concurrent failure locked the account meanwhile."""
    now = clock.now()
    done = db.session.execute(
        update(User).where(User.id == user.id, _unlocked(now))
        .values(failed_logins=0, locked_until=None)
        .execution_options(synchronize_session=False)).rowcount
    return bool(done)


def unlock(user: User) -> None:
    db.session.execute(update(User).where(User.id == user.id)
                       .values(failed_logins=0, locked_until=None)
                       .execution_options(synchronize_session=False))
    db.session.refresh(user)
