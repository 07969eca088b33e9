"""Reads remembered for the rest of one transaction: a sign-in's request asked the database the
same question twice (its factors, a nonce's use) in different layers. A remembered answer is
forgotten at the next flush, commit or rollback of the session, so nothing written meanwhile
through the session is missed; use it only for reads whose rows this process changes through
the ORM (a flush) or in a later transaction."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

T = TypeVar("T")
_KEY = "idp_session_memo"


def remembered(session: Any, key: Hashable, read: Callable[[], T]) -> T:
    """read(), or what it gave earlier in this transaction for `key`."""
    memo = session.info.setdefault(_KEY, {})
    if key in memo:
        return memo[key]
    value = memo[key] = read()
    return value


def forget(session: Any) -> None:
    session.info.pop(_KEY, None)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: UOWTransaction) -> None:
    forget(session)


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _after_end(session: Session) -> None:
    forget(session)
