"""Client registrations cached in process for the hot protocol paths (token, introspection,
authorize): a relying party's row changes rarely and is read on every request.

Invalidation:
- in this process, at once: any ORM change to a Client (insert, update, delete) and any bulk
  UPDATE/DELETE on its table bumps a version, which empties the cache (on flush, and again on
  commit or rollback, so a row read by another thread between the two is not kept);
- in other processes and nodes, after at most TTL seconds: a disabled client, a rotated
  secret or a changed redirect URI takes effect everywhere within that time.

Only found clients are cached (a flood of unknown client_ids cannot grow it), and every caller
gets its own transient copy, never attached to a session.
"""

from __future__ import annotations

import copy
import threading
import time
from itertools import chain
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session, UOWTransaction

from idp.extensions import db
from idp.oidc.models import Client

TTL = 5.0          # seconds a change made on another node may go unseen here
MAX_ENTRIES = 10_000

_lock = threading.Lock()
_version = 0
_entries: dict[str, tuple[float, int, dict[str, Any]]] = {}
_columns: tuple[str, ...] = ()
_clock = time.monotonic  # tests move it


def invalidate() -> None:
    global _version
    with _lock:
        _version += 1
        _entries.clear()


def get(client_id: str) -> Client | None:
    """The client registered under client_id (disabled ones included), or None."""
    entry = _entries.get(client_id)
    now = _clock()
    if entry is not None and entry[0] > now and entry[1] == _version:
        return _copy(entry[2])
    version = _version
    row = db.session.execute(
        select(Client).where(Client.client_id == client_id)).scalar_one_or_none()
    if row is None:
        return None
    snapshot = {name: copy.deepcopy(getattr(row, name)) for name in _column_names()}
    with _lock:
        if version == _version:  # no change was seen while it was read
            if len(_entries) >= MAX_ENTRIES:
                _entries.clear()
            _entries[client_id] = (now + TTL, version, snapshot)
    return _copy(snapshot)


def _copy(snapshot: dict[str, Any]) -> Client:
    """A transient Client of its own (JSON lists and dicts copied too)."""
    return Client(**{name: copy.deepcopy(value) if isinstance(value, (list, dict)) else value
                     for name, value in snapshot.items()})


def _column_names() -> tuple[str, ...]:
    global _columns
    if not _columns:
        _columns = tuple(attr.key for attr in inspect(Client).column_attrs)
    return _columns


# -- invalidation ------------------------------------------------------------------------------
_FLAG = "idp_client_changed"


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: UOWTransaction) -> None:
    if any(isinstance(obj, Client) for obj in chain(session.new, session.dirty,
                                                     session.deleted)):
        session.info[_FLAG] = True
        invalidate()


@event.listens_for(Session, "do_orm_execute")
def _bulk(state: Any) -> None:
    if state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) == Client.__tablename__:
            state.session.info[_FLAG] = True
            invalidate()


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _after_end(session: Session) -> None:
    if session.info.pop(_FLAG, False):
        invalidate()
