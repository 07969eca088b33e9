"""Account settings: change the phone number, re-verified by a code texted to the new number
(the SMS outbox stands in for the gateway)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.mfa import flow
from idp.mfa.models import Factor, OneTimeCode
from idp.notify.models import SmsOutbox
from tests.helpers import PASSWORD, csrf_from, login, make_user, signed_in_browser

NEW = "+12025550123"
OTHER = "+12025550187"


def post(http, **data):
    page = http.get("/account/phone")
    assert page.status_code == 200, page.headers.get("Location")
    return http.post("/account/phone", data={**data, "csrf_token": csrf_from(page.text)})


def ask(http, number: str = "(202) 555-0123", password: str = PASSWORD):
    return post(http, step="request", phone=number, current_password=password)


def confirm(http, code: str):
    return post(http, step="confirm", code=code)


def last_sms(to: str) -> str | None:
    body = db.session.execute(select(SmsOutbox.body).where(SmsOutbox.to == to)
                              .order_by(SmsOutbox.id.desc())).scalars().first()
    return re.search(r"\b(\d{6})\b", body).group(1) if body else None


def alert(html: str) -> str:
    return html.split('role="alert"', 1)[1].split("</div>", 1)[0]


def pending_factors(user) -> list[Factor]:
    return list(db.session.execute(select(Factor).where(
        Factor.user_id == user.id, Factor.confirmed_at.is_(None))).scalars())


def events(name: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name))
                .scalars())


def with_phone(number: str):
    user = make_user()
    user.phone_number, user.phone_number_verified = number, True
    db.session.commit()
    return user


def reload(user) -> User:
    db.session.expire_all()
    return db.session.get(User, user.id)


# -- the happy path --------------------------------------------------------------------------
def test_change_phone_with_a_code_texted_to_the_new_number(ctx, app, mailbox):
    user = with_phone("+12025550111")
    http = signed_in_browser(app)
    overview = http.get("/account/settings")
    assert 'href="/account/phone"' in overview.text
    assert "•••0111" in overview.text and "+12025550111" not in overview.text  # masked
    page = http.get("/account/phone")
    assert re.search(r'name="phone"[^>]*type="tel"', page.text)
    assert re.search(r'name="current_password"[^>]*autocomplete="current-password"', page.text)

    sent = ask(http)
    assert sent.status_code == 200 and "We sent a code to •••0123" in sent.text
    assert re.search(r'name="code"[^>]*inputmode="numeric"[^>]*autocomplete="one-time-code"',
                     sent.text)
    code = last_sms(NEW)
    assert code and len(code) == 6
    assert last_sms("+12025550111") is None  # only the NEW number gets the code
    user = reload(user)
    assert user.phone_number == "+12025550111"  # nothing changes before the code
    factor = pending_factors(user)[0]
    assert (factor.kind, factor.label, factor.destination) == ("sms", "Phone verification", NEW)

    done = confirm(http, code)
    assert done.status_code == 302 and done.headers["Location"] == "/account/settings"
    user = reload(user)
    assert user.phone_number == NEW and user.phone_number_verified is True
    assert pending_factors(user) == []  # the pending factor is gone, its codes too
    assert db.session.execute(select(OneTimeCode)).first() is None
    assert [f.kind for f in flow.factors(user)] == ["totp"]

    changed = events("account.phone_changed")
    assert len(changed) == 1 and changed[0].user_id == user.id
    assert changed[0].detail == {"phone": "•••0123", "previous": "•••0111"}
    for event in db.session.execute(select(AuditEvent)).scalars():
        assert "5550123" not in str(event.detail) and "5550111" not in str(event.detail)
    notice = [m for m in mailbox.to(user.email) if m["Subject"] == "Your phone number was changed"]
    assert len(notice) == 1 and "•••0123" in mailbox.body(notice[0])
    assert NEW not in mailbox.body(notice[0])
    after = http.get("/account/settings")
    assert "Your phone number is now •••0123" in after.text and NEW not in after.text
    # the same code cannot be used twice, and there is nothing pending any more
    again = confirm(http, code)
    assert again.status_code == 400 and "Enter your new phone number first" in again.text


def test_the_pages_need_a_signed_in_session(ctx, app):
    make_user()
    anonymous = app.test_client()
    response = anonymous.get("/account/phone")
    assert response.status_code == 302 and response.headers["Location"].startswith(
        "/login?next=") and "account" in response.headers["Location"]


def test_posts_need_csrf(ctx, app):
    user = make_user()
    http = signed_in_browser(app)
    refused = http.post("/account/phone", data={"step": "request", "phone": NEW,
                                                "current_password": PASSWORD})
    assert refused.status_code == 400 and "form has expired" in refused.text
    assert last_sms(NEW) is None and pending_factors(user) == []
    ask(http)
    refused = http.post("/account/phone", data={"step": "confirm", "code": last_sms(NEW)})
    assert refused.status_code == 400 and "form has expired" in refused.text
    assert reload(user).phone_number is None


# -- re-authentication -----------------------------------------------------------------------
def test_wrong_current_password_counts_toward_lockout(ctx, app, mailbox):
    user = make_user()
    http = signed_in_browser(app)
    wrong = ask(http, password="wrong-password-x")
    assert wrong.status_code == 400 and "current password is not right" in alert(wrong.text)
    assert reload(user).failed_logins == 1
    assert last_sms(NEW) is None and pending_factors(user) == []
    assert len(events("reauthentication.failure")) == 1
    missing = ask(http, password="")
    assert missing.status_code == 400 and "Enter your current password" in missing.text
    for _ in range(4):
        ask(http, password="wrong-password-x")
    user = reload(user)
    assert user.locked_until is not None  # five failures lock the account, as at sign-in
    assert any("locked" in m["Subject"] for m in mailbox.to(user.email))
    locked = ask(http, password=PASSWORD)
    assert locked.status_code == 400 and "locked" in alert(locked.text)
    assert last_sms(NEW) is None
    assert login(app.test_client()).status_code == 401


# -- the number ------------------------------------------------------------------------------
@pytest.mark.parametrize(("number", "message"), [
    ("12345", "not a valid phone number"),
    ("call me maybe", "Enter a phone number such as"),
    ("", "Enter your new mobile phone number"),
    ("+1 202 555 01234567", "not a valid phone number"),
])
def test_invalid_numbers_are_refused_readably(ctx, app, number, message):
    user = make_user()
    http = signed_in_browser(app)
    refused = ask(http, number=number)
    assert refused.status_code == 400 and message in alert(refused.text)
    assert pending_factors(user) == [] and db.session.execute(select(SmsOutbox)).first() is None
    assert reload(user).failed_logins == 0  # the password was not even looked at


def test_the_same_verified_number_is_refused(ctx, app):
    with_phone(NEW)
    http = signed_in_browser(app)
    same = ask(http, number="202-555-0123")
    assert same.status_code == 400 and "already your phone number" in same.text


# -- codes -----------------------------------------------------------------------------------
def test_wrong_code_then_right_code(ctx, app, frozen):
    user = make_user()
    http = signed_in_browser(app)
    ask(http)
    code = last_sms(NEW)
    wrong = confirm(http, "000000" if code != "000000" else "111111")
    assert wrong.status_code == 400 and "code is not right" in alert(wrong.text)
    assert 'autocomplete="one-time-code"' in wrong.text  # the code form stays
    assert reload(user).phone_number is None
    assert reload(user).failed_logins == 0  # a typo in the code does not lock the account
    assert db.session.execute(select(OneTimeCode.attempts)).scalar_one() == 1
    right = confirm(http, f" {code[:3]} {code[3:]} ")  # spaces are forgiven
    assert right.status_code == 302
    assert reload(user).phone_number == NEW


def test_a_new_number_voids_the_code_of_the_earlier_one(ctx, app, frozen):
    user = make_user()
    http = signed_in_browser(app)
    ask(http)
    first = last_sms(NEW)
    too_soon = ask(http, number=OTHER)
    assert too_soon.status_code == 400 and "ask for a new one in" in alert(too_soon.text)
    assert last_sms(OTHER) is None
    assert pending_factors(user)[0].destination == NEW  # unchanged by the refused request
    frozen.advance(31)  # past the resend cool-down
    assert ask(http, number=OTHER).status_code == 200
    second = last_sms(OTHER)
    assert len(pending_factors(user)) == 1 and pending_factors(user)[0].destination == OTHER
    if first != second:
        assert confirm(http, first).status_code == 400
    assert confirm(http, second).status_code == 302
    assert reload(user).phone_number == OTHER


def test_expired_code_then_a_new_one_and_stale_pending_factors_go(ctx, app, frozen):
    user = make_user()
    http = signed_in_browser(app)
    ask(http)
    code = last_sms(NEW)
    frozen.advance(301)  # codes live 5 minutes
    expired = confirm(http, code)
    assert expired.status_code == 400 and "expired" in alert(expired.text)
    assert reload(user).phone_number is None
    page = http.get("/account/phone")
    resent = http.post("/account/phone", data={"step": "resend",
                                               "csrf_token": csrf_from(page.text)})
    assert resent.status_code == 200 and "We sent a code to •••0123" in resent.text
    fresh = last_sms(NEW)
    # the next code is refused during the cool-down
    refused = http.post("/account/phone", data={"step": "resend",
                                                "csrf_token": csrf_from(page.text)})
    assert refused.status_code == 400 and "ask for a new one in" in refused.text
    frozen.advance(301)
    assert confirm(http, fresh).status_code == 400
    assert len(pending_factors(user)) == 1
    frozen.advance(900)  # nothing sent within the resend window: the pending factor goes
    http.get("/account/phone")
    assert pending_factors(user) == []
    assert db.session.execute(select(OneTimeCode)).first() is None
    nothing = confirm(http, fresh)
    assert nothing.status_code == 400 and "Enter your new phone number first" in nothing.text


def test_the_resend_cap_applies(ctx, app, frozen):
    make_user()
    http = signed_in_browser(app)
    assert ask(http).status_code == 200
    for _ in range(4):
        frozen.advance(31)
        page = http.get("/account/phone")
        assert http.post("/account/phone", data={
            "step": "resend", "csrf_token": csrf_from(page.text)}).status_code == 200
    frozen.advance(31)
    capped = ask(http, number=OTHER)
    assert capped.status_code == 400 and "Too many codes" in alert(capped.text)
    assert last_sms(OTHER) is None


# -- the pending factor is no sign-in method -------------------------------------------------
def test_pending_factor_is_never_a_sign_in_method(ctx, app):
    user = make_user()
    http = signed_in_browser(app)
    ask(http)
    code = last_sms(NEW)
    pending = pending_factors(user)[0]
    assert pending.id not in [f.id for f in flow.factors(user)]
    listing = http.get("/mfa/factors")
    assert listing.status_code == 200 and "Phone verification" not in listing.text
    assert f"factor={pending.id}" not in listing.text

    # A sign-in elsewhere cannot choose it at /mfa/challenge, with this code or any other.
    other = app.test_client()
    assert login(other, mfa=False).headers["Location"] == "/mfa/challenge"
    challenge = other.get(f"/mfa/challenge?factor={pending.id}")
    assert f"factor={pending.id}" not in challenge.text
    assert "•••0123" not in challenge.text
    used = other.post(f"/mfa/challenge?factor={pending.id}", data={
        "factor": pending.id, "code": code, "csrf_token": csrf_from(challenge.text)})
    assert used.status_code == 400
    assert other.get("/account").status_code == 302  # not signed in
    assert last_sms(NEW) == code  # no code was sent to the pending number by the challenge

    # Without its confirmed factors the account needs enrollment: the pending one is no factor.
    db.session.execute(Factor.__table__.delete().where(Factor.confirmed_at.is_not(None)))
    db.session.commit()
    assert flow.needs_enrollment(reload(user))
    third = app.test_client()
    assert login(third, mfa=False).headers["Location"] == "/mfa/challenge"
    assert third.get("/mfa/challenge").headers["Location"].startswith("/mfa/enroll")
