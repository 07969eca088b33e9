"""Record events in the caller's transaction; verify the chain."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import has_request_context, request
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.audit.models import AuditEvent, AuditHead
from idp.extensions import db

GENESIS = "0" * 64
# Keys that must never reach the audit trail, whatever a caller passes.
_FORBIDDEN = {"password", "code", "token", "secret", "client_secret", "refresh_token"}


def _hash(prev: str, seq: int, at: str, event: str, user_id: int | None,
          client_id: str | None, ip: str | None, actor: str | None, user_agent: str | None,
          detail: dict[str, Any]) -> str:
    body = json.dumps([prev, seq, at, event, user_id, client_id, ip, actor, user_agent, detail],
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def record(event: str, *, user_id: int | None = None, client_id: str | None = None,
           ip: str | None = None, actor: str | None = None, user_agent: str | None = None,
           **detail: Any) -> AuditEvent:
    """Append an event in the current transaction (committed with the change it records).

    IP and user agent default to the current request's; the actor defaults to the user the
    event is about (or the client, or "anonymous"); admin and CLI actions name themselves.
    """
    leaked = _FORBIDDEN & set(detail)
    if leaked:
        raise ValueError(f"audit detail must not carry {sorted(leaked)}")
    if has_request_context():
        ip = ip or request.remote_addr
        user_agent = user_agent or (request.user_agent.string or None)
    user_agent = user_agent[:300] if user_agent else None
    actor = actor or (f"user:{user_id}" if user_id else
                      f"client:{client_id}" if client_id else "anonymous")
    seq, prev = _advance_head()
    at = clock.now()
    digest = _hash(prev, seq, at.isoformat(), event, user_id, client_id, ip, actor,
                   user_agent, detail)
    item = AuditEvent(seq=seq, at=at, event=event, user_id=user_id, client_id=client_id, ip=ip,
                      actor=actor, user_agent=user_agent, detail=detail,
                      prev_hash=prev, hash=digest)
    db.session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=digest))
    db.session.add(item)
    return item


def _advance_head() -> tuple[int, str]:
    """Take the next sequence number and the previous hash in one UPDATE.

    The UPDATE holds the head row (PostgreSQL) or the write lock (SQLite) until the caller's
    transaction ends, so concurrent writers on any number of nodes extend one chain in turn.
    """
    for _ in range(2):
        row = db.session.execute(
            update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1)
            .returning(AuditHead.seq, AuditHead.last_hash)
            .execution_options(synchronize_session=False)).first()
        if row is not None:
            return row[0], row[1]
        try:
            with db.session.begin_nested():
                db.session.add(AuditHead(id=1, seq=0, last_hash=GENESIS))
        except IntegrityError:
            pass  # another writer created the head first
    raise RuntimeError("audit head row could not be created")


def verify() -> tuple[bool, int, int | None]:
    """Walk the chain. Returns (intact, events checked, first broken seq or None)."""
    prev, expected_seq, count = GENESIS, 1, 0
    for item in db.session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars():
        digest = _hash(prev, item.seq, clock.aware(item.at).isoformat(), item.event,
                       item.user_id, item.client_id, item.ip, item.actor, item.user_agent,
                       item.detail or {})
        if item.seq != expected_seq or item.prev_hash != prev or item.hash != digest:
            return False, count, item.seq
        prev, expected_seq, count = item.hash, expected_seq + 1, count + 1
    head = db.session.get(AuditHead, 1)
    if head is not None and (head.seq != count or head.last_hash != prev):
        return False, count, count + 1  # events were deleted from the end
    return True, count, None
