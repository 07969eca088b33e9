"""Record events in the caller's transaction; verify the chain."""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp import clock
from idp.audit import group_commit
from idp.audit.models import AuditEvent, AuditHead
from idp.core import events, metrics
from idp.extensions import db

GENESIS = "0" * 64
# Keys that must never reach the audit trail, whatever a caller passes.
_FORBIDDEN = {"password", "code", "token", "secret", "client_secret", "refresh_token"}


_hash = group_commit.chain_hash  # one definition of the chain's hash


def record(event: str, *, user_id: int | None = None, client_id: str | None = None,
           ip: str | None = None, actor: str | None = None, user_agent: str | None = None,
           session: Session | None = None, **detail: Any) -> int:
    """Append an event in the current transaction (committed with the change it records).

    IP and user agent default to the current request's; the actor defaults to the user the
    event is about (or the client, or "anonymous"); admin and CLI actions name themselves.
    `session` defaults to the application's (db.session). Returns the event's seq.
    """
    session = session or db.session
    row = _row(event, user_id, client_id, ip, actor, user_agent, detail)
    seq, prev = _advance_head(session)
    at = row["at"] = clock.now()
    digest = _hash(prev, seq, at.isoformat(), event, row["user_id"], row["client_id"],
                   row["ip"], row["actor"], row["user_agent"], detail)
    row.update(seq=seq, prev_hash=prev, hash=digest)
    connection = session.connection()
    connection.execute(_SET_HASH, {"digest": digest})
    connection.execute(_INSERT, row)  # Core, like the head: no unit-of-work bookkeeping
    metrics.note(session, event, detail)  # counted if this transaction commits
    events.emit(events.AUDIT_RECORDED, seq=seq)  # the audit stream, after the commit
    return seq


def record_staged(event: str, *, user_id: int | None = None, client_id: str | None = None,
                  ip: str | None = None, user_agent: str | None = None, **detail: Any) -> None:
    """record(), or, inside a group-commit stage (idp.audit.group_commit), the event handed to
    the stage: the committer chains it in batch order and commits it with the stage's rows.
    Only for the issuance path, whose writes all go to the stage."""
    if group_commit.current() is None:
        record(event, user_id=user_id, client_id=client_id, ip=ip, user_agent=user_agent,
               **detail)
        return
    row = _row(event, user_id, client_id, ip, None, user_agent, detail)
    row["at"] = clock.now()
    group_commit.event(row)


def _row(event: str, user_id: int | None, client_id: str | None, ip: str | None,
         actor: str | None, user_agent: str | None, detail: dict[str, Any]) -> dict[str, Any]:
    leaked = _FORBIDDEN & set(detail)
    if leaked:
        raise ValueError(f"audit detail must not carry {sorted(leaked)}")
    if has_request_context():
        ip = ip or request.remote_addr
        user_agent = user_agent or (request.user_agent.string or None)
    user_agent = user_agent[:300] if user_agent else None
    actor = actor or (f"user:{user_id}" if user_id else
                      f"client:{client_id}" if client_id else "anonymous")
    return {"event": event, "user_id": user_id, "client_id": client_id, "ip": ip,
            "actor": actor, "user_agent": user_agent, "detail": detail}


# Core statements on the session's connection: the head row is never loaded as an object, and
# the ORM's bulk-UPDATE machinery cost more than the statements themselves (profiled).
_HEAD = AuditHead.__table__
_ADVANCE = (update(_HEAD).where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq + 1)
            .returning(_HEAD.c.seq, _HEAD.c.last_hash))
_SET_HASH = update(_HEAD).where(_HEAD.c.id == 1).values(last_hash=bindparam("digest"))
_INSERT = insert(AuditEvent.__table__)


def _advance_head(session: Session) -> tuple[int, str]:
    """Take the next sequence number and the previous hash in one UPDATE.

    The UPDATE holds the head row (PostgreSQL) or the write lock (SQLite) until the caller's
    transaction ends, so concurrent writers on any number of nodes extend one chain in turn.
    """
    for _ in range(2):
        row = session.connection().execute(_ADVANCE).first()
        if row is not None:
            return row[0], row[1]
        try:
            with session.begin_nested():
                session.add(AuditHead(id=1, seq=0, last_hash=GENESIS))
        except IntegrityError:
            pass  # another writer created the head first
    raise RuntimeError("audit head row could not be created")


def verify(session: Session | None = None) -> tuple[bool, int, int | None]:
    """Walk the chain. Returns (intact, events checked, first broken seq or None)."""
    session = session or db.session
    prev, expected_seq, count = GENESIS, 1, 0
    for item in session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars():
        digest = _hash(prev, item.seq, clock.aware(item.at).isoformat(), item.event,
                       item.user_id, item.client_id, item.ip, item.actor, item.user_agent,
                       item.detail or {})
        if item.seq != expected_seq or item.prev_hash != prev or item.hash != digest:
            return False, count, item.seq
        prev, expected_seq, count = item.hash, expected_seq + 1, count + 1
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq != count or head.last_hash != prev):
        return False, count, count + 1  # events were deleted from the end
    return True, count, None


def anchor(session: Session | None = None) -> dict[str, Any] | None:
    """The latest event's seq, hash and time: an anchor for operators to keep elsewhere
    (another system, a ticket, paper). None while the trail is empty."""
    session = session or db.session
    item = session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)
                           ).scalar_one_or_none()
    if item is None:
        return None
    return {"seq": item.seq, "hash": item.hash, "at": clock.aware(item.at).isoformat()}


def check_anchor(kept: dict[str, Any], session: Session | None = None) -> str | None:
    """None when the anchored event still exists with the anchored hash; else what is wrong.
    With verify() intact, every event up to the anchor is then the one anchored."""
    session = session or db.session
    seq, digest = kept.get("seq"), kept.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(digest, str):
        return "the anchor needs an integer seq and a hash"
    item = session.get(AuditEvent, seq)
    if item is None:
        return f"anchored event {seq} is missing"
    if item.hash != digest:
        return f"anchored event {seq} has hash {item.hash}, the anchor says {digest}"
    return None
