"""Password policy, lockout, forced changes and the daily acknowledgment."""

import dataclasses
import html
from urllib.parse import urlencode

import pytest

from idp.accounts import passwords
from idp.accounts.views import locked_message, login_failed_message
from idp.context import runtime
from idp.extensions import db
from tests.helpers import (
    PASSWORD,
    acknowledge_days,
    auth_params,
    csrf_from,
    exchange,
    login,
    make_client,
    make_user,
    pkce,
    query,
)

NEW = "Granite-Orchid-Velvet-93?"


def _form_post(client, url: str, data: dict):
    page = client.get(url)
    return client.post(url, data={**data, "csrf_token": csrf_from(page.text)})


# -- password rules --------------------------------------------------------------------------
@pytest.mark.parametrize("candidate,needle", [
    ("Sh0rt!pass", "at least 12"),
    ("lowercase-only-words-here-42!", "upper-case"),
    ("UPPERCASE-ONLY-WORDS-42!", "lower-case"),
    ("No-Digits-In-This-Phrase!", "digit"),
    ("NoSymbolsInThisPhrase42", "symbol"),
    ("Password1234!", "too easy to guess"),
    ("Qwerty123456!", "too easy to guess"),
    ("Drsmith-Rocks-2026!", "name, username, NPI"),
    ("X1234567893-Secure!", "name, username, NPI"),
])
def test_each_password_rule(ctx, candidate, needle):
    user = make_user()
    found = passwords.problems(candidate, user)
    assert any(needle in p for p in found), found


def test_every_failed_rule_is_reported_at_once(ctx):
    found = passwords.problems("abc", make_user())
    assert len(found) >= 4


def test_a_good_password_passes(ctx):
    assert passwords.problems(NEW, make_user()) == []


def test_history_refuses_the_last_twelve(ctx):
    user = make_user()
    used = [PASSWORD] + [f"Distinct-Harbor-{i:02d}-Lamp!" for i in range(12)]
    for pw in used[1:]:
        passwords.set_password(user, pw)
    db.session.commit()
    # current + 11 earlier ones are refused; the 13th-most-recent is allowed again
    for pw in used[-12:]:
        assert any("last 12" in p for p in passwords.problems(pw, user)), pw
    assert not any("last 12" in p for p in passwords.problems(used[0], user))


def test_breached_password_file(ctx, tmp_path, monkeypatch):
    import hashlib

    sha = hashlib.sha1(NEW.encode()).hexdigest().upper()
    path = tmp_path / "breached.txt"
    path.write_text(f"{'0' * 40}:3\n{sha}:12\n")
    rt = runtime()
    pw = dataclasses.replace(rt.policy.password, breached_hashes_file=str(path))
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, password=pw))
    assert any("breach" in p for p in passwords.problems(NEW, make_user()))


def test_nist_profile(ctx, monkeypatch):
    from idp.policy import load_policy

    rt = runtime()
    nist = load_policy(rt.settings.policy_dir, {"password": {"profile": "nist-800-63b"}})
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, password=nist.password))
    user = make_user()
    assert passwords.problems("correct horse battery staple lighthouse", user) == []
    assert any("at least 15" in p for p in passwords.problems("Sh0rt-Pass-42!", user))
    assert passwords.expires_at(user) is None  # no periodic expiry


# -- lockout ---------------------------------------------------------------------------------
def test_five_failures_lock_for_thirty_minutes(ctx, client, mailbox, frozen):
    user = make_user()
    for _ in range(4):
        assert login(client, password="wrong-password-x").status_code == 401
    assert not mailbox.to(user.email)
    assert login(client, password="wrong-password-x").status_code == 401
    db.session.refresh(user)
    assert user.failed_logins == 5 and user.locked_until is not None
    locked_mail = mailbox.to(user.email)
    assert locked_mail and "locked" in locked_mail[0]["Subject"]
    right = login(client)
    assert right.status_code == 401 and html.escape(locked_message()) in right.text
    frozen.advance(29 * 60)
    assert login(client).status_code == 401
    frozen.advance(61)
    assert login(client).status_code == 302
    db.session.refresh(user)
    assert user.failed_logins == 0


def _alert(response) -> tuple[int, str]:
    text = response.text
    start = text.index('role="alert"')
    return response.status_code, text[start:text.index("</", start)]


def test_locked_answers_are_identical(ctx, client, mailbox):
    """The lockout is told honestly (not possible right now, try later or "Forgot password",
    the holder was emailed), after the failure that locks and for a locked account with the
    right password or a wrong one; a name without an account (or a disabled one) gets the
    very same answers after as many failures: nothing tells whether the account exists."""
    make_user()
    make_user(username="gone", npi=None).disabled = True
    db.session.commit()
    real = [login(client, password="wrong-password-x") for _ in range(5)] + [login(client)]
    real.append(login(client, password="wrong-password-x"))
    for name in ("nobody-here", "gone"):
        other = ctx.test_client()
        unknown = [login(other, name, "wrong-password-x") for _ in range(7)]
        assert [_alert(r) for r in unknown] == [_alert(r) for r in real]
    generic, locked = _alert(real[0]), _alert(real[4])
    assert [_alert(r) for r in real] == [generic] * 4 + [locked] * 3
    assert html.escape(login_failed_message()) in generic[1]
    assert html.escape(locked_message()) in locked[1]
    assert "not possible right now" in locked[1] and "Forgot password" in locked[1]
    assert "emailed" in locked_message() or "email" in locked_message()
    assert len(mailbox.messages) == 1  # the real holder, once


def test_success_resets_the_count(ctx, client):
    user = make_user()
    for _ in range(4):
        login(client, password="wrong-password-x")
    assert login(client).status_code == 302
    login(client, password="wrong-password-x")
    db.session.refresh(user)
    assert user.failed_logins == 1 and user.locked_until is None


def test_unlock_from_the_cli_service(ctx, client):
    from idp.accounts import lockout

    user = make_user()
    for _ in range(5):
        login(client, password="wrong-password-x")
    lockout.unlock(user)
    db.session.commit()
    assert login(client).status_code == 302


def test_throttling_answers_429_with_retry_after(ctx, client, monkeypatch):
    rt = runtime()
    tight = dataclasses.replace(rt.policy.lockout, per_ip_limit="3 per minute")
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, lockout=tight))
    for i in range(3):
        assert login(client, f"user{i}", "wrong-password-x").status_code == 401
    throttled = login(client, "user9", "wrong-password-x")
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0


# -- forced change and acknowledgment --------------------------------------------------------
def _authorize_url(rp, challenge, **extra) -> str:
    return "/authorize?" + urlencode(auth_params(rp, challenge, **extra))


def test_temporary_password_must_be_changed_before_any_code(ctx, client, mailbox):
    user = make_user("np.jones", npi=None, role="nurse_practitioner", temporary=True)
    rp = make_client()
    verifier, challenge = pkce()
    url = _authorize_url(rp, challenge)
    start = client.get(url)
    next_url = query(start.headers["Location"])["next"]
    # the sign-in's last answer leads straight to the gate /authorize owes (no hop there)
    gate = login(client, "np.jones", next_url=next_url)
    assert "/account/password/required" in gate.headers["Location"]
    none = client.get(_authorize_url(rp, challenge, prompt="none"))
    assert query(none.headers["Location"])["error"] == "interaction_required"
    weak = _form_post(client, gate.headers["Location"], {
        "new_password": "weak", "confirm_password": "weak", "next": next_url})
    assert weak.status_code == 400 and "at least 12" in weak.text
    same = _form_post(client, gate.headers["Location"], {
        "new_password": PASSWORD, "confirm_password": PASSWORD, "next": next_url})
    assert same.status_code == 400 and "last 12" in same.text
    done = _form_post(client, gate.headers["Location"], {
        "new_password": NEW, "confirm_password": NEW, "next": next_url})
    assert done.status_code == 302
    final = client.get(done.headers["Location"])
    code = query(final.headers["Location"])["code"]
    assert exchange(client, rp, code, verifier).status_code == 200
    db.session.refresh(user)
    assert not user.must_change_password
    assert mailbox.to(user.email)  # told about the change


def test_temporary_password_expires_after_72_hours(ctx, client, frozen):
    make_user("np.jones", npi=None, role="nurse_practitioner", temporary=True)
    frozen.advance(72 * 3600 + 1)
    response = login(client, "np.jones")
    assert response.status_code == 401 and "temporary password has expired" in response.text


def test_expired_password_forces_a_change_and_warns_before(ctx, client, frozen):
    user = make_user()
    frozen.advance(77 * 86400)
    acknowledge_days(user, [0])
    db.session.commit()
    login(client)
    account = client.get("/account")
    assert account.status_code == 200 and "expires in 13 days" in account.text
    frozen.advance(13 * 86400 + 60)
    acknowledge_days(user, [0])
    db.session.commit()
    login(client)
    assert "/account/password/required" in client.get("/account").headers["Location"]


def test_daily_acknowledgment_before_the_first_code_of_the_day(ctx, client, frozen):
    user = make_user(acknowledged=False)
    rp = make_client()
    verifier, challenge = pkce()
    login(client)
    url = _authorize_url(rp, challenge)
    gate = client.get(url)
    assert "/account/acknowledge" in gate.headers["Location"]
    page = client.get(gate.headers["Location"])
    assert "Daily security acknowledgment" in page.text and 'name="acknowledge"' in page.text
    unticked = client.post(gate.headers["Location"], data={
        "csrf_token": csrf_from(page.text), "next": url})
    assert unticked.status_code == 400
    ticked = client.post(gate.headers["Location"], data={
        "csrf_token": csrf_from(page.text), "next": url, "acknowledge": "y"})
    code = query(client.get(ticked.headers["Location"]).headers["Location"])["code"]
    tokens = exchange(client, rp, code, verifier).get_json()
    from idp.audit.models import AuditEvent

    event = db.session.query(AuditEvent).filter_by(event="acknowledgment.accepted").one()
    assert event.user_id == user.id and event.detail["version"]
    # next day: no token (not even by refresh) before a new acknowledgment
    frozen.advance(86400)
    login(client)
    assert "/account/acknowledge" in client.get(_authorize_url(rp, pkce()[1])).headers["Location"]
    from tests.helpers import basic

    refresh = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 400
