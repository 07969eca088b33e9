"""Group commit: requests that issue tokens hand their rows to one committer per process,
which writes a batch of them in one transaction (one fsync) and releases each request only
once its batch is durable.

A request opens a *stage* (`staged()`), and the writes of the issuance path go to it instead
of the request's transaction: the token records (`write`), the compare-and-set that makes a
refresh token single use (`check`) and the audit events (`event`). `commit(session)` hands
the stage to the process's committer and waits. Whichever request finds no batch being
written leads the next one (`Committer`): it takes every stage queued (after waiting
`IDP_GROUP_COMMIT_WAIT_US` microseconds, at most 2000, for more; 0 by default: the requests
that queued while the previous batch committed) up to `IDP_GROUP_COMMIT_MAX_ROWS` rows, and
in ONE transaction:

1. runs each stage's checks in batch order; a stage whose check matched no row is *refused*
   (nothing of it is written; its request learns so and answers as before: a reused refresh
   token);
2. writes the other stages' rows, one executemany per statement;
3. appends the batch's audit events to this process's chain (idp.audit.chains) with one
   claim of the chain's head, in batch order;
4. commits; then wakes the requests, and the first request queued meanwhile leads next.

Nothing is acknowledged before it is durable: a request answers only after the commit that
holds its rows returned. A crash loses only requests that were not answered. A batch that
fails is retried stage by stage, so one bad stage fails only its own request.

`IDP_GROUP_COMMIT=0` writes in the request's own transaction, as before.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, scoped_session

from idp.audit import chains
from idp.context import settings
from idp.core import events, metrics
from idp.extensions import db

log = logging.getLogger("idp.group_commit")
AnySession = Session | scoped_session[Any]
WAIT_TIMEOUT = 60.0  # seconds a request waits for its batch before it gives up (an error)


class Refused(Exception):
    """A check of the stage matched no row (the refresh token was used meanwhile)."""


@dataclass(eq=False)
class Stage:
    """What one request will write, in order."""

    checks: list[tuple[Any, dict]] = field(default_factory=list)
    writes: list[tuple[Any, dict]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    on_refused: list[Callable[[], None]] = field(default_factory=list)
    # set by the committer
    wake: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    lead: bool = False
    refused: bool = False
    error: BaseException | None = None
    seqs: list[int] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.checks) + len(self.writes) + len(self.events)


_STAGE: contextvars.ContextVar[Stage | None] = contextvars.ContextVar("idp_stage", default=None)


def enabled() -> bool:
    return settings().group_commit


@contextmanager
def staged(wanted: bool = True) -> Iterator[Stage | None]:
    """Within: the issuance path's writes go to a stage (when group commit is on and `wanted`).
    Leaving without `commit` discards the stage (the request was refused)."""
    if not wanted or not enabled():
        yield None
        return
    stage = Stage()
    token = _STAGE.set(stage)
    try:
        yield stage
    finally:
        _STAGE.reset(token)


def current() -> Stage | None:
    return _STAGE.get()


def write(session: AnySession, statement: Any, params: dict) -> None:
    """An INSERT of the issuance path: staged, or executed in the session's transaction."""
    stage = _STAGE.get()
    if stage is None:
        session.connection().execute(statement, params)
    else:
        stage.writes.append((statement, params))


def check(session: AnySession, statement: Any, params: dict,
          on_refused: Callable[[], None]) -> bool:
    """A compare-and-set UPDATE that must match a row. Unstaged: executed now, its result
    returned. Staged: run by the committer; if it matches nothing, `on_refused` runs in the
    request (after the batch) and `commit` raises Refused. Returns True when staged."""
    stage = _STAGE.get()
    if stage is None:
        return bool(session.connection().execute(statement, params).rowcount)
    stage.checks.append((statement, params))
    stage.on_refused.append(on_refused)
    return True


def event(row: dict[str, Any]) -> bool:
    """Stage an audit event (its columns but seq and the hashes); False when no stage is
    open (the caller appends it in its own transaction)."""
    stage = _STAGE.get()
    if stage is None:
        return False
    stage.events.append(row)
    return True


def commit(session: AnySession) -> None:
    """Make the request's writes durable: the stage through the committer (waiting for its
    batch), or the session's transaction when nothing is staged."""
    stage = _STAGE.get()
    if stage is None or not stage.rows:
        session.commit()
        return
    _STAGE.set(None)  # handed over: later writes of this request go to its session
    committer_for(db.engine).submit(stage, session)
    if stage.error is not None:
        raise stage.error
    if stage.refused:
        for callback in stage.on_refused:
            callback()
        session.commit()
        raise Refused()
    for seq in stage.seqs:
        events.emit(events.AUDIT_RECORDED, seq=seq)  # the audit stream, after the commit


class Committer:
    """One per process and engine; see the module docstring. No thread of its own: the first
    request to arrive while no batch is being written *leads*: it writes its stage and every
    stage queued meanwhile, in one transaction; the requests arriving during that commit
    queue, and when it ends the first of them leads the next batch. A process that serves
    one request at a time (a sync worker) thus commits in the request's own thread, as
    before, without a hand-off; concurrent requests share commits."""

    def __init__(self, engine: Engine, max_rows: int, wait_s: float) -> None:
        self.engine = engine
        self.max_rows = max_rows
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._pending: deque[Stage] = deque()
        self._leading = False
        self.batches = 0   # counters (tests and the bench read them)
        self.stages = 0

    def submit(self, stage: Stage, session: Any = None) -> None:
        """Queue the stage and return once it is durable (or failed, or refused). A request
        that leads writes the batch in its own session's transaction (with whatever else it
        wrote there: no second connection, no second commit); one that waits commits its
        session first (normally nothing: on SQLite a waiting request must not hold the write
        lock the leader needs)."""
        with self._lock:
            self._pending.append(stage)
            lead = not self._leading
            self._leading = True
        if not lead:
            if session is not None:
                try:
                    session.commit()
                except Exception as exc:  # noqa: BLE001 - this stage fails; others go on
                    session.rollback()
                    with self._lock:
                        if stage in self._pending:
                            self._pending.remove(stage)
                            stage.error = exc
                            return
            stage.wake.wait(WAIT_TIMEOUT)
            with self._lock:
                if not stage.finished and not stage.lead:  # gave up: never acknowledged
                    if stage in self._pending:
                        self._pending.remove(stage)
                    stage.error = TimeoutError("group commit: the batch did not complete")
                    return
            if stage.finished:
                return
        self._lead(session)

    def _lead(self, session: Any) -> None:
        if self.wait_s > 0:
            time.sleep(self.wait_s)  # IDP_GROUP_COMMIT_WAIT_US: let more requests join
        with self._lock:
            batch: list[Stage] = []
            rows = 0
            while self._pending and (not batch or
                                     rows + self._pending[0].rows <= self.max_rows):
                item = self._pending.popleft()
                batch.append(item)
                rows += item.rows
        try:
            self.flush(batch, session)
        except BaseException as exc:  # noqa: BLE001 - never leave a request waiting
            for stage in batch:
                stage.error = stage.error or exc
        with self._lock:
            for stage in batch:
                stage.finished = True
            successor = self._pending[0] if self._pending else None
            if successor is None:
                self._leading = False
            else:
                successor.lead = True
        for stage in batch:
            stage.wake.set()
        if successor is not None:
            successor.wake.set()

    def flush(self, batch: list[Stage], session: Any = None) -> None:
        """Write one batch in one transaction: the leading request's session's, or one of its
        own (tests call it directly)."""
        try:
            if session is None:
                with self.engine.begin() as conn:
                    self._write(conn, batch)
            else:
                self._write(session.connection(), batch)
                session.commit()
        except Exception as exc:
            if session is not None:
                session.rollback()
            for stage in batch:
                stage.refused, stage.seqs = False, []
            if len(batch) == 1:
                log.warning("group commit: %s; the request fails", type(exc).__name__)
                batch[0].error = exc
                return
            for stage in batch:  # one at a time: only the stage at fault fails
                self.flush([stage])
            return
        self.batches += 1
        self.stages += len(batch)
        for stage in batch:
            if not stage.refused:
                for row in stage.events:
                    metrics.count(row["event"], row["detail"])

    def _write(self, conn: Connection, batch: list[Stage]) -> None:
        live: list[Stage] = []
        for stage in batch:
            if stage.checks and not _checks_hold(conn, stage):
                stage.refused = True
            else:
                live.append(stage)
        grouped: dict[int, tuple[Any, list[dict]]] = {}
        for stage in live:
            for statement, params in stage.writes:
                grouped.setdefault(id(statement), (statement, []))[1].append(params)
        for statement, rows in grouped.values():
            conn.execute(statement, rows)
        pending = [(stage, row) for stage in live for row in stage.events]
        if not pending:
            return
        seqs = chains.append(conn, [row for _, row in pending])  # one claim for the batch
        for (stage, _), seq in zip(pending, seqs, strict=True):
            stage.seqs.append(seq)


def _checks_hold(conn: Connection, stage: Stage) -> bool:
    if len(stage.checks) == 1:
        statement, params = stage.checks[0]
        return bool(conn.execute(statement, params).rowcount)
    nested = conn.begin_nested()
    for statement, params in stage.checks:
        if not conn.execute(statement, params).rowcount:
            nested.rollback()
            return False
    nested.commit()
    return True


_COMMITTERS: dict[tuple[int, int], Committer] = {}
_LOCK = threading.Lock()


def committer_for(engine: Engine) -> Committer:
    """This process's committer for `engine` (made on first use: after a fork, each worker
    has its own)."""
    key = (os.getpid(), id(engine))
    found = _COMMITTERS.get(key)
    if found is not None:
        return found
    with _LOCK:
        found = _COMMITTERS.get(key)
        if found is None:
            config = settings()
            found = Committer(engine, config.group_commit_max_rows,
                              config.group_commit_wait_ms / 1000)
            _COMMITTERS[key] = found
        return found
