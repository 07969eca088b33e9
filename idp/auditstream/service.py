"""Delivering the audit trail to each configured sink, from its cursor on, in order.

At least once: a batch is sent, then the cursor advances over what the receiver took, in a
transaction of its own. A node that dies between the two (or a receiver that read a batch and
dropped the connection before answering) leaves the cursor behind: that batch is sent again,
so a receiver may see a seq twice, never miss one. Each attempt is claimed with the
compare-and-set UPDATE of idp.core.delivery (two nodes never send the same batch at once);
failures back off (policy retry_delay, doubling, capped at retry_max_delay) and never give up:
a receiver down for hours gets everything when it returns."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.accounts.models import User
from idp.audit.models import AuditEvent, AuditHead
from idp.auditstream import balp
from idp.auditstream.formats import (
    StreamedEvent,
    audit_event,
    cef_line,
    octet_counted,
    syslog_message,
)
from idp.auditstream.models import AuditStreamCursor
from idp.auditstream.transports import SinkConfig, SinkError, post_fhir, send_syslog
from idp.context import policy, settings
from idp.core import delivery
from idp.core.delivery import DeliveryReport
from idp.extensions import db

log = logging.getLogger("idp.auditstream")

SCHEMES = {"syslog": ("tcp", "tls"), "cef": ("tcp", "tls"), "fhir": ("http", "https")}


class SinkMisconfigured(Exception):
    """An IDP_AUDIT_SINK_* variable that cannot work (said at start and by status)."""


def configured(env: tuple[tuple[str, str], ...] | None = None) -> list[SinkConfig]:
    """The policy's sinks that have a URL in the environment, checked."""
    rules = policy().audit_stream
    values = dict(settings().audit_sink_env if env is None else env)
    sinks = []
    for name, fmt in rules.sinks.items():
        prefix = f"IDP_AUDIT_SINK_{name.upper()}_"
        url = values.get(prefix + "URL")
        if not url:
            continue
        sink = SinkConfig(name, fmt, url, values.get(prefix + "CA"),
                          values.get(prefix + "CERT"), values.get(prefix + "KEY"),
                          values.get(prefix + "TOKEN"))
        parts = urlsplit(url)
        if sink.scheme not in SCHEMES[fmt] or not parts.hostname or \
                (fmt != "fhir" and not parts.port):
            raise SinkMisconfigured(
                f"{prefix}URL: a {fmt} sink needs " +
                " or ".join(f"{s}://host{':port' if fmt != 'fhir' else '/base'}"
                            for s in SCHEMES[fmt]))
        if bool(sink.cert) != bool(sink.key):
            raise SinkMisconfigured(f"{prefix}CERT and {prefix}KEY go together")
        sinks.append(sink)
    return sinks


def _aware(value: datetime) -> datetime:
    found = clock.aware(value)
    assert found is not None
    return found


def _cursor(name: str) -> AuditStreamCursor:
    row = db.session.execute(select(AuditStreamCursor).where(AuditStreamCursor.sink == name)
                             ).scalar_one_or_none()
    if row is not None:
        return row
    try:
        with db.session.begin_nested():
            db.session.add(AuditStreamCursor(sink=name, last_seq=0, positions={}, attempts=0,
                                             next_attempt_at=clock.now()))
    except IntegrityError:
        pass  # another node made it
    db.session.commit()
    return db.session.execute(select(AuditStreamCursor).where(AuditStreamCursor.sink == name)
                              ).scalar_one()


def _positions(row: AuditStreamCursor) -> dict[int, int]:
    """How far the sink has each chain (a cursor from before chains: chain 1 to last_seq)."""
    if row.positions is None:
        return {1: row.last_seq} if row.last_seq else {}
    return {int(chain): int(position) for chain, position in row.positions.items()}


def _owed(positions: dict[int, int]) -> dict[int, int]:
    """Chains whose head is past the sink's position: chain -> (head - position)."""
    return {chain: head - positions.get(chain, 0) for chain, head in db.session.execute(
        select(AuditHead.id, AuditHead.seq)) if head > positions.get(chain, 0)}


def _batch(positions: dict[int, int], limit: int) -> list[StreamedEvent]:
    """The next events the sink is owed, oldest seq first. Each chain commits in order, so
    what is read of a chain past the sink's position has no gap."""
    owed = _owed(positions)
    if not owed:
        return []
    after = or_(*(and_(AuditEvent.chain == chain, AuditEvent.chain_seq > positions.get(chain, 0))
                  for chain in sorted(owed)))
    rows = db.session.execute(
        select(AuditEvent, User.subject, User.username)
        .outerjoin(User, User.id == AuditEvent.user_id)
        .where(after).order_by(AuditEvent.seq).limit(limit)).all()
    return [StreamedEvent(r.seq, _aware(r.at), r.event, r.user_id, subject, username,
                          r.client_id, r.ip, r.actor, r.detail or {}, r.prev_hash, r.hash,
                          r.chain, r.chain_seq)
            for r, subject, username in rows]


def _advanced(positions: dict[int, int], items: list[StreamedEvent]) -> dict[str, int]:
    moved = dict(positions)
    for item in items:
        moved[item.chain] = max(moved.get(item.chain, 0), item.chain_seq)
    return {str(chain): position for chain, position in sorted(moved.items())}


def _send(sink: SinkConfig, items: list[StreamedEvent]) -> None:
    rules = policy().audit_stream
    issuer = settings().issuer
    host = urlsplit(issuer).hostname or "idp"
    if sink.format == "fhir":
        resources = [audit_event(item, rules, issuer) for item in items]
        for item, resource in zip(items, resources, strict=True):
            wrong = balp.problems(resource)
            if wrong:  # our bug: stop here rather than send a resource that does not conform
                raise SinkError(f"event {item.seq} would not conform: {wrong[0]}",
                                items.index(item))
        post_fhir(sink, resources, rules.timeout)
        return
    frames = [octet_counted(syslog_message(
        item, rules, host, cef_line(item, rules) if sink.format == "cef" else None))
        for item in items]
    send_syslog(sink, frames, rules.timeout)


def deliver_sink(sink: SinkConfig, deadline: float | None = None,
                 now: datetime | None = None) -> DeliveryReport:
    """Send what the sink is owed, batch after batch, until it has everything, an attempt
    fails (then it waits its back-off), or the deadline (time.monotonic) passes."""
    rules = policy().audit_stream
    report = DeliveryReport()
    while deadline is None or time.monotonic() < deadline:
        now = now or clock.now()
        row = _cursor(sink.name)
        if row.next_attempt_at is not None and _aware(row.next_attempt_at) > now:
            break  # backing off
        positions = _positions(row)
        items = _batch(positions, rules.batch_size)
        if not items:
            break
        seen, last_seq, delivered_at = row.attempts, row.last_seq, row.last_delivered_at
        unchanged = and_(AuditStreamCursor.last_seq == last_seq,
                         AuditStreamCursor.last_delivered_at.is_(None) if delivered_at is None
                         else AuditStreamCursor.last_delivered_at == delivered_at)
        claim = delivery.claim(AuditStreamCursor, row.id, seen, open_=unchanged, rules=rules,
                               now=now)
        db.session.execute(update(AuditStreamCursor).where(AuditStreamCursor.id == row.id)
                           .values(last_attempt_at=now))
        db.session.commit()
        if claim is None:
            break  # another node is sending this batch
        report.attempted += 1
        taken, error = len(items), None
        try:
            _send(sink, items)
        except SinkError as exc:
            taken, error = exc.delivered, exc.reason
        done = clock.now()
        values: dict[str, Any] = {"last_error": error}
        if taken:
            values.update(last_seq=max(last_seq, *(item.seq for item in items[:taken])),
                          positions=_advanced(positions, items[:taken]),
                          last_delivered_at=done)
        if error is None:
            values.update(attempts=0, next_attempt_at=done)
        db.session.execute(update(AuditStreamCursor)
                           .where(AuditStreamCursor.id == row.id, unchanged)
                           .values(**values).execution_options(synchronize_session=False))
        db.session.commit()
        db.session.expire_all()
        report.delivered += taken
        if error is not None:
            report.failed += 1
            log.warning("audit stream %s: %s (will retry)", sink.name, error)
            break
        now = None
    return report


def deliver_due(budget: float | None = None) -> dict[str, DeliveryReport]:
    """Every configured sink, in turn."""
    if not policy().audit_stream.enabled:
        return {}
    deadline = time.monotonic() + budget if budget is not None else None
    return {sink.name: deliver_sink(sink, deadline) for sink in configured()}


@dataclass(frozen=True)
class SinkStatus:
    name: str
    format: str
    target: str            # scheme://host:port, never a path, query or credential
    delivered_seq: int
    head_seq: int
    lag: int               # events owed, over every chain
    attempts: int
    next_attempt_at: str | None
    last_delivered_at: str | None
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"sink": self.name, "format": self.format, "target": self.target,
                "delivered_seq": self.delivered_seq, "head_seq": self.head_seq,
                "lag": self.lag, "failed_attempts": self.attempts,
                "next_attempt_at": self.next_attempt_at,
                "last_delivered_at": self.last_delivered_at, "last_error": self.last_error}


def status() -> list[SinkStatus]:
    """Per configured sink: how far it is behind the head of the trail, and why."""
    head = db.session.execute(select(func.max(AuditEvent.seq))).scalar() or 0
    rows = {r.sink: r for r in db.session.execute(select(AuditStreamCursor)).scalars()}
    found = []
    for sink in configured():
        parts = urlsplit(sink.url)
        target = f"{sink.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        row = rows.get(sink.name)

        def when(value: datetime | None) -> str | None:
            return _aware(value).isoformat() if value else None
        found.append(SinkStatus(
            sink.name, sink.format, target, row.last_seq if row else 0, head,
            sum(_owed(_positions(row) if row else {}).values()), row.attempts if row else 0,
            when(row.next_attempt_at) if row else None,
            when(row.last_delivered_at) if row else None, row.last_error if row else None))
    return found
