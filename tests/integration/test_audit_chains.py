"""One audit chain per writer, bound by cross-anchors (issue 26, idp/audit/chains.py).

A writer is a process (here: an engine, as each process has its own); two engines on the
same database stand for two IdP processes or nodes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, event, select, update

from idp import clock
from idp.admin import service as admin_service
from idp.audit import chains
from idp.audit import service as audit
from idp.audit.models import AuditEvent, AuditHead
from idp.auditstream import service as stream
from idp.extensions import db


def _row(name: str, **detail: Any) -> dict[str, Any]:
    return {"event": name, "user_id": None, "client_id": None, "ip": "192.0.2.7",
            "actor": "test", "user_agent": None, "detail": detail, "at": clock.now()}


@pytest.fixture
def other_node(ctx) -> Iterator[sa.Engine]:
    """A second writer on the same database (another process would have its own engine)."""
    engine = sa.create_engine(db.engine.url.render_as_string(hide_password=False))
    yield engine
    engine.dispose()


def _write(engine: sa.Engine, *names: str) -> list[int]:
    with engine.begin() as conn:
        return chains.append(conn, [_row(name) for name in names])


def _here(*names: str) -> list[int]:
    seqs = [audit.record(name, actor="test") for name in names]
    db.session.commit()
    return seqs


def _event(seq: int) -> AuditEvent:
    db.session.expire_all()
    found = db.session.get(AuditEvent, seq)
    assert found is not None
    return found


def test_two_writers_keep_two_chains_that_verify_together(ctx, other_node):
    here = _here("a.one", "a.two")
    there = _write(other_node, "b.one")
    here += _here("a.three")
    there += _write(other_node, "b.two", "b.three")
    mine, theirs = _event(here[0]).chain, _event(there[0]).chain
    assert mine != theirs
    assert [_event(s).chain_seq for s in here] == [1, 2, 3]
    assert [_event(s).chain_seq for s in there] == [1, 2, 3]
    assert all(_event(s).chain == mine for s in here)
    assert all(_event(s).chain == theirs for s in there)
    # seq is one locator for all: unique, increasing with insertion
    assert sorted(here + there) == here[:2] + [there[0]] + [here[2]] + there[1:]
    # the second chain's first event anchors the first chain's head at that moment
    assert _event(there[0]).anchors == {str(mine): [2, _event(here[1]).hash]}
    heads = dict(db.session.execute(select(AuditHead.id, AuditHead.seq)).all())
    assert heads == {mine: 3, theirs: 3}
    found = audit.verdict()
    assert (found.intact, found.events, found.chains) == (True, 6, 2), found.problem
    assert audit.verify() == (True, 6, None)


def test_an_edited_event_in_any_chain_is_found(ctx, other_node):
    _here("a.one", "a.two")
    there = _write(other_node, "b.one", "b.two", "b.three")
    db.session.execute(update(AuditEvent).where(AuditEvent.seq == there[1])
                       .values(ip="10.6.6.6"))
    db.session.commit()
    found = audit.verdict()
    assert not found.intact and found.first_broken_seq == there[1]


def test_an_event_moved_to_another_chain_is_found(ctx, other_node):
    here = _here("a.one")
    there = _write(other_node, "b.one")
    mine = _event(here[0]).chain
    # at the same position of the other chain, with its hashes: the chain's genesis differs
    db.session.execute(delete(AuditEvent).where(AuditEvent.seq == here[0]))
    db.session.execute(update(AuditEvent).where(AuditEvent.seq == there[0]).values(chain=mine))
    db.session.commit()
    assert audit.verdict().intact is False


def test_a_cut_chain_with_a_rewritten_head_is_caught_by_another_chains_anchor(ctx, other_node):
    """Within one chain, deleting its last events and rewinding its head leaves a consistent
    chain (test_audit_anchor shows it). Once another chain anchored that head, it is not."""
    here = _here("a.one", "a.two", "a.three")
    there = _write(other_node, "b.one")          # anchors the first chain at position 3
    mine = _event(here[0]).chain
    assert _event(there[0]).anchors == {str(mine): [3, _event(here[2]).hash]}
    db.session.execute(delete(AuditEvent).where(AuditEvent.seq == here[2]))
    db.session.execute(update(AuditHead).where(AuditHead.id == mine)
                       .values(seq=2, last_hash=_event(here[1]).hash))
    db.session.commit()
    found = audit.verdict()
    assert not found.intact and found.first_broken_seq == there[0]
    assert f"anchored position 3 of chain {mine}" in (found.problem or "")


def test_a_cut_chain_with_its_head_left_is_found(ctx):
    here = _here("a.one", "a.two", "a.three")
    db.session.execute(delete(AuditEvent).where(AuditEvent.seq == here[2]))
    db.session.commit()
    found = audit.verdict()
    assert not found.intact and "events were removed" in (found.problem or "")


def test_anchors_come_again_only_when_due_and_only_for_heads_that_moved(ctx, other_node,
                                                                        monkeypatch):
    _here("a.one")
    first = _write(other_node, "b.one")
    assert _event(first[0]).anchors                 # a new chain anchors at once
    _here("a.two")
    quiet = _write(other_node, "b.two")
    assert _event(quiet[0]).anchors is None          # not due yet
    monkeypatch.setattr(chains, "CROSS_ANCHOR_SECONDS", 0.0)
    mine = _event(first[0]).anchors
    due = _write(other_node, "b.three")
    anchored = _event(due[0]).anchors
    assert anchored is not None and anchored != mine  # the first chain moved: anchored again
    again = _write(other_node, "b.four")
    assert _event(again[0]).anchors is None          # nothing moved since
    assert audit.verdict().intact


def test_a_new_chain_is_seen_only_with_its_first_event(ctx, other_node):
    """A chain's head row commits with its first event: never alone with the genesis hash
    for another writer to anchor (on SQLite a SAVEPOINT opened outside a transaction did
    that: its RELEASE committed the head row by itself), and a rolled-back first append
    leaves no head that counts an event that is not there."""
    _here("a.one")
    with other_node.connect() as conn:
        pending = conn.begin()
        chains.append(conn, [_row("b.one")])          # a new chain, not committed
        db.session.rollback()
        assert len(db.session.execute(select(AuditHead.id)).all()) == 1   # only ours
        pending.rollback()
    db.session.rollback()
    assert len(db.session.execute(select(AuditHead.id)).all()) == 1
    again = _write(other_node, "b.again")             # its memory is stale: a new chain
    assert _event(again[0]).chain_seq == 1
    assert audit.verdict().intact


def test_an_append_costs_two_statements_once_the_chain_is_known(ctx):
    _here("warm.up")
    seen: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        audit.record("counted", actor="test")
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    db.session.commit()
    assert len(seen) == 2, seen      # the conditional claim of the head, the INSERT
    assert seen[0].lstrip().upper().startswith("UPDATE AUDIT_HEAD")
    assert seen[1].lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS")


def test_a_stale_hint_falls_back_and_keeps_the_chain_whole(ctx):
    """A rolled-back append leaves this process's memory ahead of its head row: the next
    claim matches nothing and the append reads the head instead."""
    _here("a.one")
    audit.record("rolled.back", actor="test")
    db.session.rollback()
    after = _here("a.two")
    assert _event(after[0]).chain_seq == 2
    assert audit.verdict().intact


def test_writers_do_not_wait_for_each_other(ctx, other_node):
    """On PostgreSQL, a transaction holding its chain's head does not hold up another
    writer's append (one head row for all did). SQLite has one writer at a time whatever
    the rows: there the two appends still go to two head rows."""
    _here("a.one")
    _write(other_node, "b.one")
    mine = db.session.execute(select(AuditEvent.chain).where(AuditEvent.event == "a.one")
                              ).scalar_one()
    if db.engine.dialect.name != "postgresql":
        there = _write(other_node, "b.two")
        assert _event(there[0]).chain != mine
        return
    audit.record("a.held", actor="test")             # holds this chain's head row
    done: dict[str, Any] = {}

    def other() -> None:
        started = time.monotonic()
        with other_node.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '3s'"))
            done["seqs"] = chains.append(conn, [_row("b.two")])
        done["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=other)
    worker.start()
    worker.join(10)
    db.session.commit()
    assert "seqs" in done, "the other writer waited for this one's head row"
    assert done["seconds"] < 3
    assert audit.verdict().intact


def test_the_stream_loses_nothing_when_a_lower_seq_commits_later(ctx, other_node):
    """seq is taken when an event is inserted, not when it commits: a sink that has taken a
    later seq must still get the earlier one once it commits (positions per chain)."""
    _here("a.one")
    _write(other_node, "b.one")
    positions: dict[int, int] = {}
    sent: list[int] = []

    def deliver() -> None:
        nonlocal positions
        db.session.expire_all()
        items = stream._batch(positions, 100)
        sent.extend(item.seq for item in items)
        positions = {int(c): p for c, p in stream._advanced(positions, items).items()}
        db.session.commit()

    deliver()
    assert len(sent) == 2
    if db.engine.dialect.name == "postgresql":
        late = audit.record("a.late", actor="test")     # inserted, not committed yet
        early = _write(other_node, "b.after")           # a higher seq, committed first
        assert early[0] > late
        items = _batch_elsewhere(ctx, positions)        # a node streaming meanwhile
        assert [item.seq for item in items] == early
        sent.extend(item.seq for item in items)
        positions = {int(c): p for c, p in stream._advanced(positions, items).items()}
        db.session.commit()                              # a.late commits now
    else:  # one writer at a time: the situation cannot arise; the same path, in order
        _here("a.late")
        _write(other_node, "b.after")
    deliver()
    recorded = set(db.session.execute(select(AuditEvent.seq)).scalars())
    assert set(sent) == recorded and len(sent) == len(recorded) == 4


def _batch_elsewhere(app: Any, positions: dict[int, int]) -> list:
    """stream._batch as another node runs it: another thread, session and connection."""
    found: dict[str, list] = {}

    def run() -> None:
        with app.app_context():
            found["items"] = stream._batch(positions, 100)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)
    return found["items"]


def test_an_export_of_two_chains_verifies_and_a_relinked_line_does_not(ctx, other_node):
    import json

    from idp.admin.service import AuditFilter

    _here("a.one", "a.two")
    _write(other_node, "b.one", "b.two")
    _here("a.three")
    lines = list(admin_service.export_lines(AuditFilter()))
    assert admin_service.verify_lines(lines) == (True, 5, None)
    rows = [json.loads(line) for line in lines]
    bad = dict(rows[-1], prev_hash=rows[2]["hash"])   # linked to the other chain's event
    assert admin_service.verify_lines([*lines[:-1], json.dumps(bad)])[0] is False
