"""Forgot password and reset links, over the test client with real SMTP, and the helpdesk's
`idp users ...` subcommands run as a real process."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from idp.accounts.models import PasswordResetToken, User
from idp.audit.models import AuditEvent
from idp.context import runtime
from idp.extensions import db
from idp.oidc.models import AccessTokenRecord, RefreshToken
from idp.sessions.models import SsoSession
from tests.conftest import TEST_ISSUER
from tests.helpers import (
    PASSWORD,
    basic,
    csrf_from,
    exchange,
    get_code,
    login,
    make_client,
    make_user,
)

NEW = "Granite-Orchid-Velvet-93?"
LINK = re.compile(re.escape(TEST_ISSUER) + r"(/password/reset/[A-Za-z0-9_-]+)")
IDP = str(Path(sys.executable).parent / "idp")


def forgot(http, identifier: str):
    page = http.get("/password/forgot")
    assert page.status_code == 200
    return http.post("/password/forgot", data={"identifier": identifier,
                                               "csrf_token": csrf_from(page.text)})


def links(mailbox, address: str) -> list[str]:
    """Reset link paths mailed to `address`, oldest first."""
    found = []
    for message in mailbox.to(address):
        match = LINK.search(mailbox.body(message))
        if match:
            found.append(match.group(1))
    return found


def reset(http, path: str, new: str = NEW, confirm: str | None = None):
    page = http.get(path)
    assert page.status_code == 200, page.text
    return http.post(path, data={"new_password": new, "confirm_password": confirm or new,
                                 "csrf_token": csrf_from(page.text)})


def alert(html: str) -> str:
    """The error box of a page (the rules list beside it also names the rules)."""
    return html.split('role="alert"', 1)[1].split("</div>", 1)[0]


def one_link(http, mailbox, user) -> str:
    assert forgot(http, user.username).status_code == 200
    found = links(mailbox, user.email)
    assert found, "no reset link arrived"
    return found[-1]


# -- the forgot page -------------------------------------------------------------------------
def test_forgot_page_has_the_form_and_login_links_to_it(ctx, client):
    login_page = client.get("/login")
    assert 'href="/password/forgot"' in login_page.text and "Forgot password" in login_page.text
    page = client.get("/password/forgot")
    assert page.status_code == 200
    assert 'name="identifier"' in page.text and 'name="csrf_token"' in page.text
    assert '<button type="submit"' in page.text


def test_forgot_answers_identically_whatever_is_entered(ctx, client, mailbox):
    user = make_user()
    off = make_user("np.off", npi="1245319599")
    off.disabled = True
    db.session.commit()
    answers = {}
    for label, identifier in [("unknown", "nobody-here"), ("username", "drsmith"),
                              ("npi", "1234567893"), ("email", user.email),
                              ("EMAIL case", user.email.upper()), ("disabled", "np.off"),
                              ("unknown npi", "1999999999"), ("unknown email", "x@y.example")]:
        response = forgot(client, identifier)
        answers[label] = (response.status_code, response.text)
    assert len(set(answers.values())) == 1, {k: v[0] for k, v in answers.items()}
    assert answers["unknown"][0] == 200 and "If the details you entered match" in \
        answers["unknown"][1]
    # mail went out for the four that name the enabled account, and only for them
    assert len(links(mailbox, user.email)) == 4
    assert not mailbox.to("np.off@hospital.example")
    assert len(mailbox.messages) == 4
    # every request was audited, the refused ones without a link
    events = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "password.reset_requested")).scalars().all()
    assert len(events) == 8
    assert sorted(e.detail.get("refused", "") for e in events).count("unknown") == 3


def test_forgot_does_the_same_writes_for_unknown_accounts(ctx, client):
    """No account: no token row, but the same revocation UPDATE and an audit row."""
    statements: list[str] = []

    from sqlalchemy import event

    def capture(conn, cursor, statement, *args):
        statements.append(statement.split()[0].upper())

    make_user()
    forgot(client, "warm-up")  # the first audit event creates the chain's head row
    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        forgot(client, "drsmith")
        known = [s for s in statements if s in ("UPDATE", "INSERT")]
        statements.clear()
        forgot(client, "nobody-here")
        unknown = [s for s in statements if s in ("UPDATE", "INSERT")]
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    # the mail's delivery (claim the outbox row, mark it sent) runs after the response
    assert known.count("UPDATE") - 2 == unknown.count("UPDATE")
    # the token row itself and its mail's outbox row (same transaction)
    assert known.count("INSERT") - unknown.count("INSERT") == 2


def test_forgot_is_throttled_per_ip_and_per_identifier(ctx, client, app, monkeypatch):
    rt = runtime()
    tight = dataclasses.replace(rt.policy.lockout, per_ip_limit="3 per minute",
                                forgot_password_limit="2 per hour")
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, lockout=tight))
    for name in ("a-one", "a-two", "a-three"):
        assert forgot(client, name).status_code == 200
    throttled = forgot(client, "a-four")
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    # one identifier from many addresses
    codes = []
    for i in range(3):
        other = app.test_client()
        other.environ_base["REMOTE_ADDR"] = f"10.0.0.{i + 1}"
        codes.append(forgot(other, "DrSmith").status_code)
    assert codes == [200, 200, 429]


# -- the link --------------------------------------------------------------------------------
def test_reset_link_works_once(ctx, client, mailbox, app):
    user = make_user()
    path = one_link(client, mailbox, user)
    assert path.startswith("/password/reset/")
    token = path.rsplit("/", 1)[1]
    assert len(token) >= 43  # 256 bits, url-safe base64
    stored = db.session.execute(select(PasswordResetToken)).scalar_one()
    assert token not in stored.token_hash and len(stored.token_hash) == 64
    page = client.get(path)
    assert page.status_code == 200
    for name in ("new_password", "confirm_password"):
        assert re.search(rf'name="{name}"[^>]*autocomplete="new-password"', page.text), name
    assert '<button type="submit"' in page.text and 'name="csrf_token"' in page.text
    assert page.headers["Cache-Control"] == "no-store"
    done = reset(client, path)
    assert done.status_code == 200 and "Password changed" in done.text
    assert "Sign in" in done.text
    # the new password signs in, the old one does not
    assert login(app.test_client(), password=PASSWORD).status_code == 401
    assert login(app.test_client(), password=NEW).status_code == 302
    # told by email, audited
    subjects = [m["Subject"] for m in mailbox.to(user.email)]
    assert "Your password was changed" in subjects
    assert db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "password.reset", AuditEvent.user_id == user.id)).scalar_one()
    # second use: a readable page, never a 500
    again = client.get(path)
    assert again.status_code == 400 and "cannot be used" in again.text
    replay = client.post(path, data={"new_password": "Other-Lilac-Summit-71#",
                                     "confirm_password": "Other-Lilac-Summit-71#",
                                     "csrf_token": csrf_from(page.text)})
    assert replay.status_code == 400
    assert login(app.test_client(), password=NEW).status_code == 302


def test_link_expires_after_24_hours(ctx, client, mailbox, frozen):
    user = make_user()
    path = one_link(client, mailbox, user)
    frozen.advance(24 * 3600 - 60)  # 23h59m
    page = client.get(path)
    assert page.status_code == 200
    frozen.advance(61)  # 24h + 1s
    assert client.get(path).status_code == 400
    late = client.post(path, data={"new_password": NEW, "confirm_password": NEW,
                                   "csrf_token": csrf_from(page.text)})
    assert late.status_code == 400 and "cannot be used" in late.text
    db.session.refresh(user)
    from idp.context import runtime as rt

    rt().hasher.verify(user.password_hash, PASSWORD)  # unchanged


def test_newer_request_invalidates_the_older_link(ctx, client, mailbox):
    user = make_user()
    forgot(client, "drsmith")
    forgot(client, user.email)
    first, second = links(mailbox, user.email)
    assert first != second
    assert client.get(first).status_code == 400
    assert reset(client, second).status_code == 200


@pytest.mark.parametrize("token,status", [
    ("nope", 400), ("A" * 43, 400), ("x" * 129, 400), ("%00%ff", 400),
    ("..%2F..%2Fetc", 404),  # the slashes make it another path, which no route serves
])
def test_unknown_tokens_get_a_readable_page(ctx, client, token, status):
    response = client.get(f"/password/reset/{token}")
    assert response.status_code == status
    assert "Something went wrong" not in response.text
    posted = client.post(f"/password/reset/{token}", data={"new_password": NEW})
    assert posted.status_code == status


def test_two_concurrent_uses_exactly_one_wins(ctx, app, mailbox):
    user = make_user()
    path = one_link(app.test_client(), mailbox, user)
    db.session.commit()  # no open transaction in this thread while the two race
    passwords = ["Granite-Orchid-Velvet-93?", "Harbor-Juniper-Comet-58%"]
    barrier = threading.Barrier(2)
    results: dict[int, int] = {}

    def use(index: int) -> None:
        http = app.test_client()
        page = http.get(path)
        token = csrf_from(page.text)
        barrier.wait()
        response = http.post(path, data={"new_password": passwords[index],
                                         "confirm_password": passwords[index],
                                         "csrf_token": token})
        results[index] = response.status_code

    threads = [threading.Thread(target=use, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results.values()) == [200, 400], results
    winner = passwords[[i for i, code in results.items() if code == 200][0]]
    loser = passwords[[i for i, code in results.items() if code == 400][0]]
    assert login(app.test_client(), password=winner).status_code == 302
    assert login(app.test_client(), password=loser).status_code == 401
    assert len(db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "password.reset")).scalars().all()) == 1


def test_reset_ends_every_session_and_revokes_tokens(ctx, app, mailbox):
    user = make_user()
    rp = make_client()
    signed_in = app.test_client()
    assert login(signed_in).status_code == 302
    other_device = app.test_client()
    login(other_device)
    assert signed_in.get("/account").status_code == 200
    code, verifier, _ = get_code(signed_in, rp)
    tokens = exchange(signed_in, rp, code, verifier).get_json()
    assert tokens["refresh_token"]

    stranger = app.test_client()  # the reset happens elsewhere, from the emailed link
    assert reset(stranger, one_link(stranger, mailbox, user)).status_code == 200

    for http in (signed_in, other_device):
        away = http.get("/account")
        assert away.status_code == 302 and "/login" in away.headers["Location"]
    rows = db.session.execute(select(SsoSession).where(SsoSession.user_id == user.id)
                              ).scalars().all()
    assert len(rows) == 2 and all(r.end_reason == "password_reset" for r in rows)
    refresh = signed_in.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 400 and refresh.get_json()["error"] == "invalid_grant"
    userinfo = signed_in.get("/userinfo", headers={
        "Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401
    assert all(t.revoked_at for t in db.session.execute(select(RefreshToken)).scalars())
    assert all(t.revoked_at for t in db.session.execute(select(AccessTokenRecord)).scalars())


def test_rules_are_enforced_and_all_failures_listed(ctx, client, mailbox):
    user = make_user()
    path = one_link(client, mailbox, user)
    weak = reset(client, path, "abc", "abd")
    assert weak.status_code == 400
    items = re.findall(r"<li>([^<]+)</li>", alert(weak.text))
    assert len(items) >= 5, items  # mismatch, length, upper, digit, symbol, guessable...
    assert any("do not match" in i for i in items)
    assert any("at least 12" in i for i in items)
    reused = reset(client, path, PASSWORD)
    assert reused.status_code == 400 and "last 12" in alert(reused.text)
    personal = reset(client, path, "Drsmith-Rocks-2026!")
    assert personal.status_code == 400 and "username" in alert(personal.text)
    assert reset(client, path).status_code == 200  # refusals did not use the link up


def test_reset_clears_a_temporary_password_and_the_lockout(ctx, client, mailbox):
    user = make_user("np.jones", npi=None, role="nurse_practitioner", temporary=True)
    for _ in range(5):
        login(client, "np.jones", "wrong-password-x")
    db.session.refresh(user)
    assert user.locked_until is not None and user.must_change_password
    assert reset(client, one_link(client, mailbox, user)).status_code == 200
    db.session.refresh(user)
    assert not user.must_change_password and user.temporary_password_expires_at is None
    assert user.failed_logins == 0 and user.locked_until is None
    signed = login(client, "np.jones", NEW)
    assert signed.status_code == 302
    assert client.get("/account").status_code == 200  # no forced change any more


def test_disabled_account_link_stops_working(ctx, client, mailbox):
    user = make_user()
    path = one_link(client, mailbox, user)
    user.disabled = True
    db.session.commit()
    assert client.get(path).status_code == 400


# -- the helpdesk CLI ------------------------------------------------------------------------
@pytest.fixture
def run(env, app):
    def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        db.session.commit()  # end this test's transaction: the CLI process writes
        result = subprocess.run([IDP, *args], env={**os.environ, **env}, capture_output=True,
                                text=True, timeout=60)
        db.session.expire_all()
        if check:
            assert result.returncode == 0, result.stderr
        return result
    return _run


def _cli_events(name: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name))
                .scalars())


def test_cli_unlock(ctx, client, run):
    user = make_user()
    for _ in range(5):
        login(client, password="wrong-password-x")
    assert login(client).status_code == 401
    out = json.loads(run("users", "unlock", "drsmith", "--json").stdout)
    assert out == {"username": "drsmith", "locked": False}
    assert login(client).status_code == 302
    event = _cli_events("user.unlocked")[0]
    assert event.actor == "cli" and event.user_id == user.id


def test_cli_disable_and_enable(ctx, app, run):
    user = make_user()
    signed_in = app.test_client()
    login(signed_in)
    out = json.loads(run("users", "disable", "1234567893", "--json").stdout)  # by NPI
    assert out["disabled"] is True and out["sessions_ended"] == 1
    away = signed_in.get("/account")
    assert away.status_code == 302 and "/login" in away.headers["Location"]
    assert login(app.test_client()).status_code == 401
    text = run("users", "enable", "drsmith").stdout
    assert "enabled drsmith" in text
    assert login(app.test_client()).status_code == 302
    assert [e.actor for e in _cli_events("user.disabled") + _cli_events("user.enabled")] == \
        ["cli", "cli"]
    db.session.refresh(user)
    assert not user.disabled


def test_cli_reset_password_emails_a_link(ctx, client, mailbox, run):
    user = make_user()
    out = json.loads(run("users", "reset-password", "drsmith", "--json").stdout)
    assert out["emailed"] is True and out["email"] == user.email
    path = links(mailbox, user.email)[-1]
    assert "helpdesk" in mailbox.body(mailbox.to(user.email)[-1])
    assert reset(client, path).status_code == 200
    assert _cli_events("password.reset_link_sent")[0].actor == "cli"


def test_cli_temporary_password_is_printed_once_and_must_be_changed(ctx, app, run):
    user = make_user()
    signed_in = app.test_client()
    login(signed_in)
    out = json.loads(run("users", "reset-password", "drsmith", "--temporary", "--json").stdout)
    temp = out["temporary_password"]
    assert temp and temp != PASSWORD and out["expires_at"]
    assert signed_in.get("/account").status_code == 302  # its sessions ended
    db.session.refresh(user)
    assert user.must_change_password and user.temporary_password_expires_at is not None
    fresh = app.test_client()
    assert login(fresh, password=temp).status_code == 302
    assert "/account/password/required" in fresh.get("/account").headers["Location"]
    event = _cli_events("password.temporary_set")[0]
    assert event.actor == "cli" and temp not in json.dumps(event.detail)


def test_cli_sessions_end(ctx, app, run):
    make_user()
    devices = [app.test_client() for _ in range(2)]
    for http in devices:
        login(http)
    out = json.loads(run("users", "sessions", "end", "drsmith", "--json").stdout)
    assert out["sessions_ended"] == 2
    for http in devices:
        assert http.get("/account").status_code == 302
    assert _cli_events("sessions.ended_all")[0].actor == "cli"


@pytest.mark.parametrize("args", [
    ["users", "unlock", "nobody"], ["users", "disable", "nobody"],
    ["users", "enable", "0000000000"], ["users", "reset-password", "nobody"],
    ["users", "reset-password", "nobody", "--temporary"], ["users", "sessions", "end", "nobody"],
])
def test_cli_unknown_account_exits_2_with_one_line(ctx, run, args):
    result = run(*args, "--json", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no account" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_reset_password_refuses_a_disabled_account(ctx, run, mailbox):
    make_user().disabled = True
    result = run("users", "reset-password", "drsmith", check=False)
    assert result.returncode == 2 and "disabled" in result.stderr
    assert not mailbox.messages
    assert db.session.execute(select(User).where(User.username == "drsmith")).scalar_one()
