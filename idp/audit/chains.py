"""The audit trail as one hash chain per writer, bound together by cross-anchors (issue 26).

One head row for the whole cluster made every audit write of every node wait for the one
before it. Now each process appends to a chain of its own: `audit_head` has one row per chain
(`id`), each event records its `chain` and `chain_seq`, and its hash covers the previous event
*of its chain* (the first event of chain c follows `genesis(c)`, so an event cannot be moved
to another chain unseen). Writers on different processes and nodes touch different head rows
and never wait for each other; the threads of one process take turns on its row, as the whole
cluster once did on the single one.

Cross-anchors bind the chains into one verifiable history: the first event of a new chain,
and then one event every `CROSS_ANCHOR_SECONDS` of each chain, carries `anchors`, the other
chains' heads (chain -> [chain_seq, hash]) read in its transaction, covered by its hash.
`idp audit verify` walks every chain, compares each head row with its chain's last event and
checks that every anchored event still has the anchored hash: rewriting or cutting a chain
after another chain anchored it is caught even when its head row is rewritten to match.

Ownership of a chain is a matter of speed, never of correctness: a process remembers its
chain and the head it last wrote (`_Writer`) and claims the next positions with ONE
conditional UPDATE (`seq = expected AND last_hash = prev`); when anything else moved the head
(another thread, a rolled-back transaction, a wiped table) the claim matches no row and the
append falls back to advancing the head under its row lock and reading it, as before. Two
processes that somehow share a chain are therefore still correct, only slower.

`seq` (the event's id) is a locator: unique, increasing with insertion, taken without a lock
(a sequence on PostgreSQL), possibly with gaps; the chain position is what the hashes order.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.audit.models import AuditEvent, AuditHead

GENESIS = "0" * 64   # chain 1's start: the single chain of before (its chain_seq is its seq)
CROSS_ANCHOR_SECONDS = 30.0   # how often each chain anchors the others' heads
NEW_CHAIN_LOOKBACK = timedelta(days=1)   # a new chain anchors the heads written since then

_HEAD = AuditHead.__table__
_EVENTS = AuditEvent.__table__


def genesis(chain: int) -> str:
    """The 'previous hash' of chain `chain`'s first event."""
    if chain == 1:
        return GENESIS
    return hashlib.sha256(f"idp-audit-chain:{chain}".encode()).hexdigest()


def chain_hash(prev: str, position: int, at: str, event: str, user_id: int | None,
               client_id: str | None, ip: str | None, actor: str | None,
               user_agent: str | None, detail: dict[str, Any],
               anchors: dict[str, Any] | None = None) -> str:
    """The event's hash: the previous hash of its chain, its chain position and its columns
    (and the anchors it carries; events without them hash as before chains existed)."""
    items: list[Any] = [prev, position, at, event, user_id, client_id, ip, actor, user_agent,
                        detail]
    if anchors is not None:
        items.append(anchors)
    body = json.dumps(items, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def row_hash(prev: str, row: Any) -> str:
    """chain_hash of a stored event (an AuditEvent or a row with its columns)."""
    at = clock.aware(row.at)
    assert at is not None
    return chain_hash(prev, row.chain_seq, at.isoformat(), row.event,
                      row.user_id, row.client_id, row.ip, row.actor, row.user_agent,
                      row.detail or {}, row.anchors)


@dataclass
class _Writer:
    """What this process last wrote to its chain (a hint: the conditional claim checks it)."""

    chain: int
    head: tuple[int, str]                  # (chain_seq, hash) of the last event written
    anchored_at: float = 0.0               # time.monotonic() of the last cross-anchor
    anchored_wall: datetime | None = None  # and its wall-clock time (heads updated since)
    anchored: dict[int, int] = field(default_factory=dict)  # chain -> chain_seq anchored


_WRITERS: dict[tuple[int, int], _Writer] = {}
_LOCK = threading.Lock()

_CLAIM = (update(_HEAD)
          .where(_HEAD.c.id == bindparam("chain"), _HEAD.c.seq == bindparam("expected"),
                 _HEAD.c.last_hash == bindparam("prev"))
          .values(seq=bindparam("new_seq"), last_hash=bindparam("new_hash"),
                  updated_at=bindparam("now")))
_SET_HASH = (update(_HEAD).where(_HEAD.c.id == bindparam("chain"))
             .values(last_hash=bindparam("new_hash")))
_INSERT_ONE = insert(_EVENTS).returning(_EVENTS.c.seq)
_INSERT_MANY = insert(_EVENTS).returning(_EVENTS.c.seq, sort_by_parameter_order=True)
_INSERT_PLAIN = insert(_EVENTS)


def append(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Chain `rows` (event columns with `at`; no seq, chain or hashes) onto this process's
    chain in `conn`'s transaction, in order. Returns their seqs.

    Common case: 2 statements (the claim and the INSERT), plus one SELECT of the other heads
    when a cross-anchor is due."""
    if not rows:
        return []
    key = (os.getpid(), id(conn.engine))
    writer = _WRITERS.get(key)
    now = clock.now()
    if writer is not None:
        position, prev = writer.head
        anchors = _due_anchors(conn, writer, now)
        staged = _chained(writer.chain, position, prev, rows, anchors)
        claimed = conn.execute(_CLAIM, {
            "chain": writer.chain, "expected": position, "prev": prev,
            "new_seq": position + len(rows), "new_hash": staged[-1]["hash"], "now": now})
        if claimed.rowcount == 1:
            writer.head = (position + len(rows), staged[-1]["hash"])
            _anchored(writer, anchors, now)
            return _insert(conn, staged)
        return _append_slow(conn, key, writer, rows, now, anchors)
    return _append_slow(conn, key, writer, rows, now, None)


def _append_slow(conn: Connection, key: tuple[int, int], writer: _Writer | None,
                 rows: list[dict[str, Any]], now: datetime,
                 anchors: dict[str, Any] | None) -> list[int]:
    """Advance the chain's head under its row lock (reading where it was), or start a chain
    when this process has none here (or its head row is gone). `anchors`: what the failed
    claim computed for this writer's chain, kept while the chain stays the same."""
    count = len(rows)
    found = None
    if writer is not None:
        found = conn.execute(
            update(_HEAD).where(_HEAD.c.id == writer.chain)
            .values(seq=_HEAD.c.seq + count, updated_at=now)
            .returning(_HEAD.c.seq, _HEAD.c.last_hash)).first()
    if writer is not None and found is not None:
        position, prev = found[0] - count, found[1]
    else:
        chain = _new_chain(conn, count, now)
        writer = _Writer(chain=chain, head=(0, genesis(chain)))
        position, prev = 0, genesis(chain)
        anchors = _due_anchors(conn, writer, now)  # a new chain anchors the others at once
    staged = _chained(writer.chain, position, prev, rows, anchors)
    conn.execute(_SET_HASH, {"chain": writer.chain, "new_hash": staged[-1]["hash"]})
    writer.head = (position + count, staged[-1]["hash"])
    _anchored(writer, anchors, now)
    with _LOCK:
        _WRITERS[key] = writer
    return _insert(conn, staged)


def _new_chain(conn: Connection, count: int, now: datetime) -> int:
    """A head row of a new chain, numbered after the highest, holding `count` positions
    (its hash set by the caller), in the caller's transaction: if that rolls back, so does
    the chain."""
    numbered = select(func.coalesce(func.max(_HEAD.c.id), 0) + 1).scalar_subquery()
    statement = insert(_HEAD).values(id=numbered, seq=count, last_hash=GENESIS,
                                     updated_at=now).returning(_HEAD.c.id)
    if conn.dialect.name == "sqlite":
        # One writer at a time: the INSERT holds the write lock, no two writers number
        # alike. And no SAVEPOINT: pysqlite opens no transaction for it, so its RELEASE
        # would commit the head alone, before its first event, for others to anchor.
        return int(conn.execute(statement).scalar_one())
    for _ in range(8):
        try:
            with conn.begin_nested():
                return int(conn.execute(statement).scalar_one())
        except IntegrityError:
            continue   # another process took that number first
    raise RuntimeError("no audit chain could be started")


def _due_anchors(conn: Connection, writer: _Writer, now: datetime) -> dict[str, Any] | None:
    """The other chains' heads that moved since this chain last anchored them, when an
    anchor is due (a new chain: at once); None when none is due, {} when nothing moved (the
    anchor is then done all the same)."""
    if writer.anchored_at and time.monotonic() - writer.anchored_at < CROSS_ANCHOR_SECONDS:
        return None
    since = writer.anchored_wall or now - NEW_CHAIN_LOOKBACK
    heads = conn.execute(
        select(_HEAD.c.id, _HEAD.c.seq, _HEAD.c.last_hash)
        .where(_HEAD.c.id != writer.chain, _HEAD.c.seq > 0,
               (_HEAD.c.updated_at.is_(None)) | (_HEAD.c.updated_at >= since))).all()
    moved = {str(c): [n, h] for c, n, h in heads if writer.anchored.get(c) != n}
    return moved or {}


def _anchored(writer: _Writer, anchors: dict[str, Any] | None, now: datetime) -> None:
    if anchors is None:
        return
    writer.anchored_at = time.monotonic()
    writer.anchored_wall = now
    for chain, (position, _) in anchors.items():
        writer.anchored[int(chain)] = position


def _chained(chain: int, position: int, prev: str, rows: list[dict[str, Any]],
             anchors: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The rows with their chain positions and hashes; the first carries the anchors."""
    staged = []
    for index, row in enumerate(rows):
        position += 1
        carried = anchors if index == 0 and anchors else None
        at: datetime = row["at"]
        digest = chain_hash(prev, position, at.isoformat(), row["event"], row["user_id"],
                            row["client_id"], row["ip"], row["actor"], row["user_agent"],
                            row["detail"], carried)
        staged.append({**row, "chain": chain, "chain_seq": position, "anchors": carried,
                       "prev_hash": prev, "hash": digest})
        prev = digest
    return staged


def _insert(conn: Connection, staged: list[dict[str, Any]]) -> list[int]:
    if len(staged) == 1:
        return [conn.execute(_INSERT_ONE, staged[0]).scalar_one()]
    if conn.dialect.name != "sqlite":
        return list(conn.execute(_INSERT_MANY, staged).scalars())
    # SQLite: RETURNING in parameter order would send one INSERT per row (no sentinel);
    # one executemany, then the seqs of the positions just written
    conn.execute(_INSERT_PLAIN, staged)
    return list(conn.execute(
        select(_EVENTS.c.seq).where(_EVENTS.c.chain == staged[0]["chain"],
                                    _EVENTS.c.chain_seq.between(staged[0]["chain_seq"],
                                                                staged[-1]["chain_seq"]))
        .order_by(_EVENTS.c.chain_seq)).scalars())


def forget() -> None:
    """Drop what this process remembers of its chains (tests that wipe the tables, forks)."""
    with _LOCK:
        _WRITERS.clear()


# -- verification --------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    intact: bool
    events: int
    chains: int
    first_broken_seq: int | None = None
    problem: str | None = None


def verify(conn: Connection) -> Verdict:
    """Walk every chain; check each head row against its chain; check every anchor.

    The heads are read first: events committed while the walk runs extend their chains
    past the heads read, which is no break (a head and its events commit together)."""
    heads = {c: (n, h) for c, n, h in conn.execute(
        select(_HEAD.c.id, _HEAD.c.seq, _HEAD.c.last_hash))}
    holders = conn.execute(select(_EVENTS.c.seq, _EVENTS.c.anchors)
                           .where(_EVENTS.c.anchors.is_not(None))).all()
    wanted: dict[tuple[int, int], str | None] = {}
    for _, anchors in holders:
        for chain, pair in (anchors or {}).items():
            wanted[(int(chain), int(pair[0]))] = None
    count, walked, reached = 0, set(), set()
    current, prev, expected = None, "", 1
    for item in conn.execute(select(_EVENTS).order_by(_EVENTS.c.chain, _EVENTS.c.chain_seq)):
        if item.chain != current:
            current, prev, expected = item.chain, genesis(item.chain), 1
            walked.add(item.chain)
        if item.chain_seq != expected or item.prev_hash != prev or item.hash != row_hash(
                prev, item):
            return Verdict(False, count, len(walked), item.seq,
                           f"event {item.seq} (chain {item.chain}, position {item.chain_seq}) "
                           "does not follow its chain")
        head = heads.get(item.chain)
        if head is not None and head[0] == item.chain_seq:
            if head[1] != item.hash:
                return Verdict(False, count, len(walked), item.seq,
                               f"chain {item.chain}'s head names another hash at position "
                               f"{item.chain_seq}")
            reached.add(item.chain)
        if (item.chain, item.chain_seq) in wanted:
            wanted[(item.chain, item.chain_seq)] = item.hash
        prev, expected, count = item.hash, expected + 1, count + 1
    short = sorted(c for c, (n, _) in heads.items() if n > 0 and c not in reached)
    if short:
        return Verdict(False, count, len(walked), None,
                       f"chain {short[0]} ends before its head ({heads[short[0]][0]}): "
                       "events were removed")
    headless = walked - set(heads)
    if headless:  # started during the walk, or its head row is gone
        later = {c for (c,) in conn.execute(select(_HEAD.c.id).where(
            _HEAD.c.id.in_(sorted(headless))))}
        if headless - later:
            return Verdict(False, count, len(walked), None,
                           f"chain {min(headless - later)} has no head row")
    for holder, anchors in holders:
        for chain, (position, digest) in (anchors or {}).items():
            if wanted.get((int(chain), int(position))) != digest:
                return Verdict(False, count, len(walked), holder,
                               f"event {holder} anchored position {position} of chain "
                               f"{chain} with another hash (or it is gone)")
    return Verdict(True, count, len(walked))


def heads(conn: Connection) -> dict[str, list[Any]]:
    """Every chain's head (chain -> [chain_seq, hash]), for anchors kept outside."""
    return {str(c): [n, h] for c, n, h in conn.execute(
        select(_HEAD.c.id, _HEAD.c.seq, _HEAD.c.last_hash).where(_HEAD.c.seq > 0)
        .order_by(_HEAD.c.id))}


def event_at(conn: Connection, chain: int, position: int) -> Any:
    return conn.execute(select(_EVENTS.c.seq, _EVENTS.c.hash).where(
        and_(_EVENTS.c.chain == chain, _EVENTS.c.chain_seq == position))).first()
