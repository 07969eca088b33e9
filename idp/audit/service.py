"""Record events in the caller's transaction (on this process's chain: idp.audit.chains);
verify the chains."""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp import clock
from idp.audit import chains, group_commit
from idp.audit.models import AuditEvent
from idp.core import events, metrics
from idp.extensions import db

# Keys that must never reach the audit trail, whatever a caller passes.
_FORBIDDEN = {"password", "code", "token", "secret", "client_secret", "refresh_token"}


_hash = chains.chain_hash  # one definition of the chain's hash


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
    row["at"] = clock.now()
    (seq,) = chains.append(session.connection(), [row])  # this process's chain
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


def verify(session: Session | None = None) -> tuple[bool, int, int | None]:
    """Walk every chain (idp.audit.chains.verify). Returns (intact, events checked, first
    broken seq or None); `verdict()` also says why and how many chains."""
    found = verdict(session)
    return found.intact, found.events, found.first_broken_seq


def verdict(session: Session | None = None) -> chains.Verdict:
    return chains.verify((session or db.session()).connection())


def anchor(session: Session | None = None) -> dict[str, Any] | None:
    """The latest event's seq, hash and time, and every chain's head: an anchor for
    operators to keep elsewhere (another system, a ticket, paper). None while the trail is
    empty."""
    session = session or db.session()
    item = session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)
                           ).scalar_one_or_none()
    if item is None:
        return None
    return {"seq": item.seq, "hash": item.hash, "at": clock.aware(item.at).isoformat(),
            "chains": chains.heads(session.connection())}


def check_anchor(kept: dict[str, Any], session: Session | None = None) -> str | None:
    """None when the anchored event (and every chain head the anchor names) still exists
    with the anchored hash; else what is wrong. With verify() intact, every event up to the
    anchored positions is then the one anchored."""
    session = session or db.session()
    conn = session.connection()
    seq, digest = kept.get("seq"), kept.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(digest, str):
        return "the anchor needs an integer seq and a hash"
    item = session.get(AuditEvent, seq)
    if item is None:
        return f"anchored event {seq} is missing"
    if item.hash != digest:
        return f"anchored event {seq} has hash {item.hash}, the anchor says {digest}"
    heads = kept.get("chains", {})
    if not isinstance(heads, dict):
        return "the anchor's chains must be an object"
    for chain, pair in heads.items():
        if (not str(chain).isdigit() or not isinstance(pair, list) or len(pair) != 2
                or not isinstance(pair[0], int) or not isinstance(pair[1], str)):
            return f"the anchor's chain {chain!r} needs [position, hash]"
        found = chains.event_at(conn, int(chain), pair[0])
        if found is None:
            return f"anchored position {pair[0]} of chain {chain} is missing"
        if found.hash != pair[1]:
            return (f"anchored position {pair[0]} of chain {chain} has hash {found.hash}, "
                    f"the anchor says {pair[1]}")
    return None
