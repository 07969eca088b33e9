"""SMS gateway down (the http backend pointed at a local gateway answering 503, or at a closed
port): the sign-in page says so and offers the account's other ways; the failed send neither
counts toward the resend limits nor leaves a usable code; another channel completes the
sign-in."""

from __future__ import annotations

import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from idp import clock
from idp.audit.models import AuditEvent
from idp.context import runtime
from idp.extensions import db
from idp.mfa.models import Factor, OneTimeCode
from tests.conftest import free_port
from tests.helpers import PASSWORD, csrf_from, make_user, totp_now


class Gateway:
    """A local SMS gateway whose answer the test sets (503 = down)."""

    def __init__(self) -> None:
        self.status = 503
        self.received: list[bytes] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                gateway.received.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(gateway.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway(ctx, monkeypatch):
    gw = Gateway()
    rt = runtime()
    monkeypatch.setattr(rt, "settings", dataclasses.replace(
        rt.settings, sms_backend="http", sms_gateway_url=gw.url))
    yield gw
    gw.close()


def _sms_first_user(totp: bool = True, email: bool = False):
    user = make_user(totp=totp)
    db.session.add(Factor(user_id=user.id, kind="sms", label="Text message",
                          created_at=clock.now(), confirmed_at=clock.now(),
                          destination="+12025550123"))
    if email:
        db.session.add(Factor(user_id=user.id, kind="email", label="Email code",
                              created_at=clock.now(), confirmed_at=clock.now(),
                              destination=user.email))
    db.session.commit()
    return user


def _password_step(client) -> None:
    page = client.get("/login")
    response = client.post("/login", data={"username": "drsmith", "password": PASSWORD,
                                           "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302 and "/mfa/challenge" in response.headers["Location"]


def _sms_factor(user) -> Factor:
    return db.session.execute(select(Factor).where(Factor.user_id == user.id,
                                                   Factor.kind == "sms")).scalar_one()


def test_gateway_down_offers_the_other_channels(ctx, client, gateway, mailbox):
    user = _sms_first_user(email=True)
    sms = _sms_factor(user)
    _password_step(client)
    page = client.get(f"/mfa/challenge?factor={sms.id}")
    assert page.status_code == 200
    assert len(gateway.received) == 3  # the sender's three tries all got 503
    text = " ".join(page.text.split())
    assert "We could not send a text message to •••0123" in text
    assert "not answering right now" in text and "Verify another way" in text
    totp = db.session.execute(select(Factor).where(Factor.user_id == user.id,
                                                   Factor.kind == "totp")).scalar_one()
    email = db.session.execute(select(Factor).where(Factor.user_id == user.id,
                                                    Factor.kind == "email")).scalar_one()
    assert f"factor={totp.id}" in page.text and f"factor={email.id}" in page.text
    # the code that never left is gone, and audited without its value
    assert db.session.execute(select(func.count()).select_from(OneTimeCode)).scalar() == 0
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "mfa.code_undelivered")).scalar_one()
    assert event.detail == {"factor": "sms"}

    # the email channel works
    by_mail = client.get(f"/mfa/challenge?factor={email.id}")
    assert "We sent a code" in by_mail.text
    import re

    body = mailbox.body([m for m in mailbox.to(user.email) if "sign-in code" in m["Subject"]][-1])
    code = re.search(r"\b(\d{6})\b", body).group(1)
    done = client.post("/mfa/challenge", data={"code": code, "factor": email.id,
                                               "csrf_token": csrf_from(by_mail.text)})
    assert done.status_code == 302 and "/mfa" not in done.headers["Location"]


def test_gateway_back_resend_is_not_blocked_by_the_failed_send(ctx, client, gateway):
    user = _sms_first_user()
    sms = _sms_factor(user)
    _password_step(client)
    page = client.get(f"/mfa/challenge?factor={sms.id}")
    assert "could not send" in page.text
    gateway.status = 200  # the gateway is back: "send again" works at once (no cool-down)
    again = client.post(f"/mfa/challenge?factor={sms.id}", data={
        "action": "resend", "factor": sms.id, "csrf_token": csrf_from(page.text)})
    assert "We sent a code" in again.text, again.text
    assert b"+12025550123" in gateway.received[-1]


def test_closed_port_and_totp_instead(ctx, client, monkeypatch):
    rt = runtime()
    monkeypatch.setattr(rt, "settings", dataclasses.replace(
        rt.settings, sms_backend="http", sms_gateway_url=f"http://127.0.0.1:{free_port()}/"))
    user = _sms_first_user()
    sms = _sms_factor(user)
    _password_step(client)
    page = client.get(f"/mfa/challenge?factor={sms.id}")
    assert "could not send a text message" in page.text and "Verify another way" in page.text
    totp = db.session.execute(select(Factor).where(Factor.user_id == user.id,
                                                   Factor.kind == "totp")).scalar_one()
    other = client.get(f"/mfa/challenge?factor={totp.id}")
    done = client.post("/mfa/challenge", data={"code": totp_now("drsmith"), "factor": totp.id,
                                               "csrf_token": csrf_from(other.text)})
    assert done.status_code == 302 and "/mfa" not in done.headers["Location"]


def test_only_sms_points_to_recovery_codes(ctx, client, gateway):
    user = _sms_first_user(totp=False)
    sms = _sms_factor(user)
    _password_step(client)
    page = client.get(f"/mfa/challenge?factor={sms.id}")
    assert "You have no other sign-in method" in page.text and "/mfa/recovery" in page.text
