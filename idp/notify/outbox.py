"""The mail outbox: no email is lost to a mail-server outage.

Mails that matter beyond the moment (password-reset links, address verification) are written
to `mail_outbox` in the same transaction as the change that caused them (`enqueue`), then sent
right after the response (`deliver_after_response`). Every other mail is sent at once and only
kept when that attempt fails (`keep_failed`, its own short transaction). A failed mail is
retried with exponential back-off (policies/mail.toml) by `idp notify deliver` (cron) until it
is delivered or abandoned. Bodies are encrypted with the data key (idp/core/crypto.py) and
erased as soon as the mail is delivered or abandoned; the rows themselves go after the
retention period. Each attempt is claimed with one compare-and-set UPDATE, so several nodes or
cron runs never send the same mail twice.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from sqlalchemy import delete, func, insert, or_, select, update

from idp import clock
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core import crypto, delivery
from idp.core.after_response import run_after_response
from idp.extensions import db
from idp.notify.models import MailOutbox
from idp.notify.smtp import smtp_send
from idp.policy import MailPolicy

log = logging.getLogger("idp.notify")


def backoff(attempts: int) -> timedelta:
    """Wait after the n-th failed attempt (policies/mail.toml; idp.core.delivery)."""
    return delivery.backoff(_rules(), attempts)


def _rules() -> MailPolicy:
    rules = policy().mail
    if rules is None:  # load_policy always reads policies/mail.toml
        raise RuntimeError("no mail policy loaded")
    return rules


def enqueue(to: str, subject: str, body: str) -> MailOutbox:
    """Add the mail to the caller's transaction; it goes out after the commit."""
    row = MailOutbox(recipient=to, subject=subject[:200], body=crypto.encrypt(body),
                     created_at=clock.now(), attempts=0, next_attempt_at=clock.now())
    db.session.add(row)
    db.session.flush()
    return row


def keep_failed(to: str, subject: str, body: str, error: str) -> bool:
    """A mail sent directly failed: keep it for retries, in a transaction of its own (the
    caller's work has committed already). False when even that failed (database down)."""
    now = clock.now()
    values = {"recipient": to, "subject": subject[:200], "body": crypto.encrypt(body),
              "created_at": now, "attempts": 1, "next_attempt_at": now + backoff(1),
              "last_error": error[:200]}
    try:
        with db.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:  # never wait long behind a writer holding the file
                conn.exec_driver_sql("PRAGMA busy_timeout = 2000")
            try:
                conn.execute(insert(MailOutbox.__table__).values(**values))
                conn.commit()
            finally:
                if sqlite:
                    conn.exec_driver_sql("PRAGMA busy_timeout = 30000")
    except Exception as exc:  # noqa: BLE001 - the mail is lost; say so, do not fail the page
        log.error("mail to one recipient lost: SMTP failed and the outbox could not keep it "
                  "(%s)", type(exc).__name__)
        return False
    log.warning("mail to one recipient queued for retry (%s)", error[:100])
    return True


def attempt(row_id: int) -> bool | None:
    """One delivery attempt of a due row. True delivered, False failed, None when the row is
    not due or another process claimed this attempt."""
    now = clock.now()
    row = db.session.get(MailOutbox, row_id, populate_existing=True)
    if row is None or row.sent_at is not None or row.abandoned_at is not None \
            or row.next_attempt_at is None or row.next_attempt_at > now or row.body is None:
        db.session.commit()
        return None
    seen, to, subject, sealed = row.attempts, row.recipient, row.subject, row.body
    claim = delivery.claim(MailOutbox, row_id, seen, open_=MailOutbox.sent_at.is_(None),
                           rules=_rules(), now=now, delay=backoff(seen + 1))
    db.session.commit()
    if claim is None:
        return None
    tries, last = claim.attempts, claim.last
    error = smtp_send(to, subject, crypto.decrypt(sealed))
    if error is None:
        db.session.execute(update(MailOutbox).where(MailOutbox.id == row_id).values(
            sent_at=clock.now(), next_attempt_at=None, body=None, last_error=None)
            .execution_options(synchronize_session=False))
        db.session.commit()
        return True
    values: dict = {"last_error": error[:200]}
    if last:
        values.update(abandoned_at=clock.now(), body=None)
        audit.record("mail.abandoned", actor="idp", attempts=tries, error=error[:200])
        log.error("mail to one recipient abandoned after %d attempts: %s", tries, error)
    else:
        log.warning("mail to one recipient failed (attempt %d), retry later: %s", tries, error)
    db.session.execute(update(MailOutbox).where(MailOutbox.id == row_id).values(**values)
                       .execution_options(synchronize_session=False))
    db.session.commit()
    return False


def deliver_after_response(row_ids: list[int]) -> None:
    """Attempt these (committed) rows once the response has gone out, so how long the mail
    server takes tells a caller nothing (the forgot-password page answers in constant time)."""
    for row_id in row_ids:
        # One job per mail: a failed attempt is logged and rolled back, cron retries the row.
        run_after_response(partial(_attempt_quietly, row_id))


def _attempt_quietly(row_id: int) -> None:
    try:
        attempt(row_id)
    except Exception as exc:  # noqa: BLE001 - cron retries the row; no mail content in logs
        db.session.rollback()
        log.error("mail delivery after response failed: %s", type(exc).__name__)


def deliver_now(row_ids: list[int]) -> bool:
    """Attempt these committed rows now (CLI, admin console). True when all were delivered."""
    return all([attempt(row_id) is True for row_id in row_ids])


@dataclass
class DeliveryReport(delivery.DeliveryReport):
    """The queue's report (idp.core.delivery) and the rows purged past the retention."""

    purged: int = 0


def _pending():  # noqa: ANN202
    return (MailOutbox.sent_at.is_(None), MailOutbox.abandoned_at.is_(None),
            MailOutbox.next_attempt_at.is_not(None))


def deliver_due(limit: int = 1000) -> DeliveryReport:
    """The sender job: attempt every due mail, then purge rows past the retention."""
    report = DeliveryReport()
    now = clock.now()
    ids = db.session.execute(select(MailOutbox.id).where(
        *_pending(), MailOutbox.next_attempt_at <= now)
        .order_by(MailOutbox.next_attempt_at, MailOutbox.id).limit(limit)).scalars().all()
    db.session.commit()
    for row_id in ids:
        result = attempt(row_id)
        if result is None:
            continue
        report.attempted += 1
        if result:
            report.delivered += 1
        else:
            report.failed += 1
            row = db.session.get(MailOutbox, row_id, populate_existing=True)
            if row is not None and row.abandoned_at is not None:
                report.abandoned += 1
    report.purged = purge()
    report.pending = db.session.execute(
        select(func.count()).select_from(MailOutbox).where(*_pending())).scalar_one()
    db.session.commit()
    return report


def purge() -> int:
    """Delete delivered and abandoned rows older than the retention period."""
    cutoff = clock.now() - timedelta(seconds=_rules().retention)
    removed = db.session.execute(delete(MailOutbox).where(
        or_(MailOutbox.sent_at < cutoff, MailOutbox.abandoned_at < cutoff))
        .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return removed


def smtp_reachable() -> bool:
    """A TCP connection to the mail server opens (loopback: a fraction of a millisecond)."""
    conf = settings()
    try:
        with socket.create_connection((conf.smtp_host, conf.smtp_port),
                                      timeout=_rules().smtp_probe_timeout):
            return True
    except OSError:
        return False


def mail_delayed() -> bool:
    """Should a page warn that its email may be late? When mails are waiting for a retry, or
    the mail server does not answer. The same for every account, so it reveals none."""
    waiting = db.session.execute(select(MailOutbox.id).where(
        *_pending(), MailOutbox.attempts > 0).limit(1)).first() is not None
    return waiting or not smtp_reachable()
