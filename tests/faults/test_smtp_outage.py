"""SMTP down: the mail is kept in the outbox (encrypted), the page says it may be delayed, and
`idp notify deliver` sends it once the mail server is back, exactly once."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from idp.context import runtime
from idp.extensions import db
from idp.notify import outbox
from idp.notify.models import MailOutbox
from tests.conftest import Mailbox, free_port
from tests.helpers import PASSWORD, csrf_from, login, make_user
from tests.integration.test_reset import LINK, forgot

IDP = str(Path(sys.executable).parent / "idp")


class Smtp:
    """An aiosmtpd server of this test, on a port of its own, that the test stops and starts;
    `start` returns a fresh mailbox (what arrived while it ran)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.controller = None

    def start(self) -> Mailbox:
        from aiosmtpd.controller import Controller

        box = Mailbox.__new__(Mailbox)  # reuse Mailbox's readers, not its session server
        box.messages, box.port = [], self.port

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                from email import message_from_bytes, policy

                box.messages.append(message_from_bytes(envelope.content,
                                                       policy=policy.default))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()
        box.controller = self.controller
        return box

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp(ctx, monkeypatch):
    server = Smtp()
    rt = runtime()
    monkeypatch.setattr(rt, "settings", dataclasses.replace(rt.settings, smtp_port=server.port))
    yield server
    server.stop()


def _deliver(env: dict[str, str], port: int) -> tuple[int, dict]:
    result = subprocess.run([IDP, "notify", "deliver", "--json"],
                            env={**os.environ, **env, "SMTP_PORT": str(port)},
                            capture_output=True, text=True, timeout=60)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_reset_mail_survives_an_smtp_outage(ctx, client, smtp, env):
    user = make_user()
    box = smtp.start()
    smtp.stop()  # the mail server goes down

    page = forgot(client, "drsmith")
    assert page.status_code == 200
    assert "may\nbe delayed" in page.text or "may be delayed" in page.text
    rows = db.session.execute(select(MailOutbox)).scalars().all()
    assert len(rows) == 1
    row = rows[0]
    assert row.recipient == user.email and row.sent_at is None and row.attempts == 1
    assert row.last_error and row.next_attempt_at > row.created_at
    # the body is a secret (it holds the reset link): encrypted at rest
    assert "/password/reset/" not in row.body and "Reset" not in row.body
    assert not box.messages

    # not due yet: the job leaves it alone
    code, report = _deliver(env, smtp.port)
    assert report["attempted"] == 0 and report["pending"] == 1

    # time passes (the back-off), the server is still down: the attempt fails, exit 1
    db.session.execute(MailOutbox.__table__.update().values(next_attempt_at=row.created_at))
    db.session.commit()
    code, report = _deliver(env, smtp.port)
    assert code == 1 and report["failed"] == 1 and report["pending"] == 1
    db.session.expire_all()
    assert db.session.get(MailOutbox, row.id).attempts == 2

    # the server is back; the job delivers the mail, once
    box = smtp.start()
    db.session.execute(MailOutbox.__table__.update().values(next_attempt_at=row.created_at))
    db.session.commit()
    code, report = _deliver(env, smtp.port)
    assert code == 0 and report["delivered"] == 1 and report["pending"] == 0
    code, report = _deliver(env, smtp.port)
    assert report["attempted"] == 0
    assert len(box.messages) == 1
    link = LINK.search(box.body(box.messages[0])).group(1)
    db.session.expire_all()
    sent = db.session.get(MailOutbox, row.id)
    assert sent.sent_at is not None and sent.body is None  # the secret is gone once delivered
    assert client.get(link).status_code == 200  # the delayed link works


def test_forgot_page_does_not_warn_when_mail_flows(ctx, client, smtp):
    make_user()
    box = smtp.start()
    page = forgot(client, "drsmith")
    assert "may be delayed" not in page.text.replace("\n", " ")
    assert len(box.messages) == 1
    row = db.session.execute(select(MailOutbox)).scalar_one()
    assert row.sent_at is not None and row.body is None and row.attempts == 1


def test_a_direct_mail_that_fails_is_kept_and_retried(ctx, smtp, frozen):
    """Notices (lock, password changed, ...) are sent at once; a failed one is queued."""
    from idp.notify.mailer import send_mail

    smtp.start()
    smtp.stop()
    assert send_mail("np@hospital.example", "Your password was changed", "Hello") is False
    row = db.session.execute(select(MailOutbox)).scalar_one()
    assert row.attempts == 1 and row.sent_at is None
    assert outbox.deliver_due().attempted == 0  # back-off not passed
    frozen.advance(runtime().policy.mail.retry_delay + 1)
    box = smtp.start()
    report = outbox.deliver_due()
    assert (report.delivered, report.pending) == (1, 0)
    assert [m["Subject"] for m in box.messages] == ["Your password was changed"]


def test_sign_in_codes_are_not_queued(ctx, smtp):
    from idp.notify.mailer import send_mail

    smtp.start()
    smtp.stop()
    assert send_mail("np@hospital.example", "Your sign-in code", "123456", queue=False) is False
    assert db.session.execute(select(MailOutbox)).first() is None


def test_abandoned_after_max_attempts_and_purged_after_retention(ctx, smtp, frozen):
    smtp.start()
    smtp.stop()
    rules = runtime().policy.mail
    outbox.enqueue("np@hospital.example", "Reset your password", "link")
    db.session.commit()
    for _ in range(rules.max_attempts):
        frozen.advance(rules.retry_max_delay + 1)
        outbox.deliver_due()
    row = db.session.execute(select(MailOutbox)).scalar_one()
    assert row.abandoned_at is not None and row.body is None
    assert row.attempts == rules.max_attempts
    frozen.advance(rules.retention + 1)
    assert outbox.deliver_due().purged == 1
    assert db.session.execute(select(MailOutbox)).first() is None


def test_email_change_says_the_link_may_be_delayed(ctx, client, smtp):
    make_user()
    box = smtp.start()
    assert login(client).status_code == 302
    smtp.stop()
    page = client.get("/account/email")
    response = client.post("/account/email", data={
        "new_email": "new.address@hospital.example", "current_password": PASSWORD,
        "csrf_token": csrf_from(page.text)}, follow_redirects=True)
    assert response.status_code == 200
    assert "may be delayed" in response.text
    rows = db.session.execute(select(MailOutbox).order_by(MailOutbox.id)).scalars().all()
    assert [r.recipient for r in rows] == ["new.address@hospital.example",
                                           "drsmith@hospital.example"]
    assert all(r.sent_at is None and r.attempts == 1 for r in rows)
    assert not box.messages
