"""Record events in the caller's transaction; verify the chain."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select

from idp import clock
from idp.audit.models import AuditEvent, AuditHead
from idp.extensions import db

GENESIS = "0" * 64
# Keys that must never reach the audit trail, whatever a caller passes.
_FORBIDDEN = {"password", "code", "token", "secret", "client_secret", "refresh_token"}


def _hash(prev: str, seq: int, at: str, event: str, user_id: int | None,
          client_id: str | None, ip: str | None, detail: dict[str, Any]) -> str:
    body = json.dumps([prev, seq, at, event, user_id, client_id, ip, detail],
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def record(event: str, *, user_id: int | None = None, client_id: str | None = None,
           ip: str | None = None, **detail: Any) -> AuditEvent:
    """Append an event in the current transaction (committed with the change it records)."""
    leaked = _FORBIDDEN & set(detail)
    if leaked:
        raise ValueError(f"audit detail must not carry {sorted(leaked)}")
    head = db.session.execute(
        select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, seq=0, last_hash=GENESIS)
        db.session.add(head)
    at = clock.now()
    seq = head.seq + 1
    digest = _hash(head.last_hash, seq, at.isoformat(), event, user_id, client_id, ip, detail)
    item = AuditEvent(seq=seq, at=at, event=event, user_id=user_id, client_id=client_id, ip=ip,
                      detail=detail, prev_hash=head.last_hash, hash=digest)
    head.seq, head.last_hash = seq, digest
    db.session.add(item)
    return item


def verify() -> tuple[bool, int, int | None]:
    """Walk the chain. Returns (intact, events checked, first broken seq or None)."""
    prev, expected_seq, count = GENESIS, 1, 0
    for item in db.session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars():
        digest = _hash(prev, item.seq, clock.aware(item.at).isoformat(), item.event,
                       item.user_id, item.client_id, item.ip, item.detail or {})
        if item.seq != expected_seq or item.prev_hash != prev or item.hash != digest:
            return False, count, item.seq
        prev, expected_seq, count = item.hash, expected_seq + 1, count + 1
    head = db.session.get(AuditHead, 1)
    if head is not None and (head.seq != count or head.last_hash != prev):
        return False, count, count + 1  # events were deleted from the end
    return True, count, None
