"""Code delivery per challenge (issue 20): the resend cool-down and cap belong to one sign-in
attempt or enrolment and one channel. Another sign-in, another channel or the same phone number
entered again never holds a code back, and a page says a code was sent only when one was."""

from __future__ import annotations

import dataclasses
import re

import pytest
from sqlalchemy import func, select

from idp import clock
from idp.context import policy, runtime
from idp.extensions import db
from idp.mfa.models import Factor
from idp.notify.models import SmsOutbox
from tests.conftest import free_port
from tests.helpers import csrf_from, login, make_user

PHONE = "+12025550123"


def _factor(user, kind: str, destination: str) -> Factor:
    factor = Factor(user_id=user.id, kind=kind, label="Text message" if kind == "sms" else
                    "Email code", created_at=clock.now(), confirmed_at=clock.now(),
                    destination=destination)
    db.session.add(factor)
    db.session.commit()
    return factor


def _texts(to: str) -> list[str]:
    return list(db.session.execute(select(SmsOutbox.body).where(SmsOutbox.to == to)
                                   .order_by(SmsOutbox.id)).scalars())


def _code(body: str) -> str:
    return re.search(r"\b(\d{6})\b", body).group(1)


def _password_step(client) -> None:
    response = login(client, "drsmith", mfa=False)
    assert response.headers["Location"] == "/mfa/challenge"


def _submit(client, url: str, data: dict):
    page = client.get(url)
    return client.post(url, data={**data, "csrf_token": csrf_from(page.text)})


def test_a_second_sign_in_gets_its_own_code_at_once(ctx, client, frozen):
    """Defect 1: the challenge opened with "A code was sent just now" (another sign-in's
    code, or none at all) and sent nothing."""
    user = make_user(totp=False)
    _factor(user, "sms", PHONE)
    _password_step(client)
    first = client.get("/mfa/challenge")
    assert "We sent a code to •••0123" in first.text and len(_texts(PHONE)) == 1

    other = ctx.test_client()  # a second browser, within the cool-down of the first
    _password_step(other)
    second = other.get("/mfa/challenge")
    assert second.status_code == 200
    assert "We sent a code to •••0123" in second.text and "just now" not in second.text
    assert len(_texts(PHONE)) == 2
    assert "Code sent by text message to •••0123" in second.text
    done = _submit(other, "/mfa/challenge", {"code": _code(_texts(PHONE)[-1])})
    assert done.status_code == 302 and "/mfa" not in done.headers["Location"]

    # Within one sign-in the cool-down holds (policy unchanged) and says where the code went.
    page = client.get("/mfa/challenge")
    resend = client.post("/mfa/challenge", data={"action": "resend",
                                                 "csrf_token": csrf_from(page.text)})
    assert "A code was sent to •••0123 just now" in resend.text
    assert len(_texts(PHONE)) == 2
    frozen.advance(policy().mfa.resend_cooldown)
    page = client.get("/mfa/challenge")
    again = client.post("/mfa/challenge", data={"action": "resend",
                                                "csrf_token": csrf_from(page.text)})
    assert "We sent a code" in again.text and len(_texts(PHONE)) == 3


def test_entering_the_same_phone_again_keeps_the_code_already_received(ctx, client):
    """Defect 2: re-submitting the number within 30 s made a new pending factor whose code
    was never sent, so the code the person held was refused."""
    make_user(totp=False)
    _password_step(client)
    first = _submit(client, "/mfa/enroll/sms", {"step": "destination", "phone": "(202) 555-0123"})
    assert first.status_code == 200 and "•••0123" in first.text
    received = _code(_texts(PHONE)[-1])

    again = _submit(client, "/mfa/enroll/sms", {"step": "destination",
                                                "phone": "202 555 0123"})
    assert again.status_code == 200, again.text
    assert "A code was sent to •••0123 just now" in again.text
    assert len(_texts(PHONE)) == 1  # the cool-down holds: nothing new was sent

    # A different number within the cool-down: nothing is sent, and the page says so.
    other = _submit(client, "/mfa/enroll/sms", {"step": "destination",
                                                "phone": "202 555 0188"})
    assert other.status_code == 400 and 'role="alert"' in other.text
    assert "Code sent to" not in other.text and _texts("+12025550188") == []

    confirmed = _submit(client, "/mfa/enroll/sms", {"step": "destination",
                                                    "phone": "202 555 0123"})
    assert confirmed.status_code == 200
    done = client.post("/mfa/enroll/sms", data={"step": "confirm", "code": received,
                                                "csrf_token": csrf_from(confirmed.text)})
    assert done.status_code == 302 and done.headers["Location"].startswith(
        "/mfa/recovery-codes"), done.text
    assert db.session.execute(select(func.count()).select_from(Factor).where(
        Factor.confirmed_at.is_not(None))).scalar() == 1


def test_switching_to_email_within_the_cool_down_sends_the_email_code(ctx, client, mailbox):
    """Defect 3: switching channel within 30 s sent nothing yet said "Code sent to p•••@"."""
    user = make_user(totp=False)
    sms = _factor(user, "sms", PHONE)
    email = _factor(user, "email", user.email)
    _password_step(client)
    by_text = client.get(f"/mfa/challenge?factor={sms.id}")
    assert "We sent a code to •••0123" in by_text.text and len(_texts(PHONE)) == 1

    by_mail = client.get(f"/mfa/challenge?factor={email.id}")
    masked = f"{user.email[0]}•••@{user.email.split('@')[1]}"
    assert f"We sent a code to {masked}" in by_mail.text, by_mail.text
    assert f"Code sent by email to {masked}" in by_mail.text
    mails = [m for m in mailbox.to(user.email) if "sign-in code" in m["Subject"]]
    assert len(mails) == 1
    code = _code(mailbox.body(mails[0]))
    done = _submit(client, f"/mfa/challenge?factor={email.id}",
                   {"code": code, "factor": email.id})
    assert done.status_code == 302 and "/mfa" not in done.headers["Location"]


@pytest.fixture
def mail_down(ctx, monkeypatch):
    rt = runtime()
    monkeypatch.setattr(rt, "settings", dataclasses.replace(rt.settings,
                                                            smtp_port=free_port()))


def test_the_email_failure_page_lists_the_real_alternatives(ctx, client, mail_down):
    user = make_user(totp=True)
    email = _factor(user, "email", user.email)
    sms = _factor(user, "sms", PHONE)
    _password_step(client)
    page = client.get(f"/mfa/challenge?factor={email.id}")
    assert page.status_code == 200
    text = page.text
    assert "We could not send an email to" in text and "a email" not in text
    assert "Code sent by email" not in text and "We sent a code" not in text
    assert "Send a code" in text  # "send again" would say one was sent
    others = text[text.index('id="other-ways"'):]
    others = others[:others.index("</ul>")]
    app = db.session.execute(select(Factor.id).where(Factor.user_id == user.id,
                                                     Factor.kind == "totp")).scalar_one()
    assert f"factor={sms.id}" in others and f"factor={app}" in others, others
    assert f"factor={email.id}" not in others
    # The alternatives work: the text message is sent at once.
    switched = client.get(f"/mfa/challenge?factor={sms.id}")
    assert "We sent a code to •••0123" in switched.text and len(_texts(PHONE)) == 1


def test_the_email_failure_page_without_other_methods_says_what_is_left(ctx, client,
                                                                          mail_down):
    user = make_user(totp=False)
    _factor(user, "email", user.email)
    _password_step(client)
    page = client.get("/mfa/challenge")
    assert "We could not send an email to" in page.text
    assert "You have no other sign-in method" in page.text and "/mfa/recovery" in page.text
    assert "Verify another way" not in page.text
