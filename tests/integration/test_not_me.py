""""This wasn't me" on /account/activity: every session of the account ends (the relying
parties get back-channel logout tokens), every token is revoked, the next sign-in must set a
new password, the report is audited and raises an alert, and the user and security staff are
emailed (real SMTP)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from idp.accounts.models import User
from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.oidc.models import RefreshToken
from idp.security.models import SecurityAlert
from idp.sessions.models import SsoSession
from tests.helpers import (
    PASSWORD,
    csrf_from,
    exchange,
    get_code,
    login,
    make_client,
    make_user,
)
from tests.receiver import Receiver

AGENT = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"
SECURITY = "sec.officer@hospital.example"


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def _browser(app, ip: str):
    http = app.test_client()
    http.environ_base.update({"REMOTE_ADDR": ip, "HTTP_USER_AGENT": AGENT})
    return http


def _sign_in_rows(html: str) -> dict[str, str]:
    """seq of each "Not me" form of the recent sign-ins table -> the row's IP."""
    rows = {}
    for row in re.findall(r'<tr class="event".*?</tr>', html, re.S):
        seq = re.search(r'name="event" value="(\d+)"', row)
        ip = re.findall(r"<td>([^<]*)</td>", row)[1]
        if seq:
            rows[seq.group(1)] = ip
    return rows


def test_this_wasnt_me_ends_everything_and_tells_security(ctx, mailbox, receiver):
    user = make_user()
    make_user("sec.officer", npi=None, role="security")
    rp = make_client(backchannel_logout_uri=receiver.url("/bcl"))
    mine = _browser(ctx, "10.1.2.3")
    assert login(mine).status_code == 302
    intruder = _browser(ctx, "203.0.113.66")
    assert login(intruder).status_code == 302
    code, verifier, _ = get_code(intruder, rp)
    stolen = exchange(intruder, rp, code, verifier).get_json()
    assert stolen["refresh_token"]
    mailbox.messages.clear()

    page = mine.get("/account/activity")
    assert "This wasn't me" in page.text
    rows = _sign_in_rows(page.text)
    [reported] = [seq for seq, ip in rows.items() if ip == "203.0.113.66"]
    done = mine.post("/account/activity/not-me",
                     data={"csrf_token": csrf_from(page.text), "event": reported})
    assert done.status_code == 200 and "Your account is secured" in done.text
    assert "ended every session of your account (2)" in done.text

    # every session ended, both browsers signed out, every token revoked
    db.session.rollback()
    assert all(s.ended_at is not None and s.end_reason == "reported_not_me"
               for s in db.session.execute(select(SsoSession)).scalars())
    assert mine.get("/account").status_code == 302
    assert intruder.get("/account").status_code == 302
    assert all(t.revoked_at is not None
               for t in db.session.execute(select(RefreshToken)).scalars())
    refused = intruder.post("/token", data={"grant_type": "refresh_token",
                                            "refresh_token": stolen["refresh_token"]},
                            auth=(rp.client_id, rp.client_secret))
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    # the relying party the intruder signed in to got a back-channel logout token
    assert [p.path for p in receiver.posts] == ["/bcl"]

    # audited, alerted, emailed
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "account.compromise_reported")).scalar_one()
    assert event.user_id == user.id and event.detail["reported_ip"] == "203.0.113.66"
    assert event.detail["sessions_ended"] == 2
    alert = db.session.execute(select(SecurityAlert).where(
        SecurityAlert.kind == "compromise_reported")).scalar_one()
    assert alert.state == "new" and alert.user_id == user.id
    assert alert.detail["ip"] == "203.0.113.66"
    [to_user] = mailbox.to(user.email)
    assert to_user["Subject"] == "You reported a sign-in that was not you"
    assert "203.0.113.66" in mailbox.body(to_user) and "new password" in mailbox.body(to_user)
    [to_staff] = mailbox.to(SECURITY)
    assert to_staff["Subject"] == "Reported sign-in: drsmith"
    assert f"Review alert {alert.id}" in mailbox.body(to_staff)
    for message in mailbox.messages:
        assert PASSWORD not in mailbox.body(message)
    assert audit.verify()[0]

    # the next sign-in must choose a new password before anything else
    again = _browser(ctx, "10.1.2.3")
    response = login(again)
    assert response.status_code == 302
    forced = again.get("/account", follow_redirects=True)
    assert "reported as used by someone else" in forced.text
    assert db.session.get(User, user.id).must_change_password


def test_one_button_without_a_row_and_a_foreign_row_is_ignored(ctx, mailbox):
    user = make_user()
    other = make_user("np.lee", npi=None, role="nurse_practitioner")
    make_user("sec.officer", npi=None, role="security")
    theirs = _browser(ctx, "10.9.9.9")
    login(theirs, other.username)
    foreign = db.session.execute(select(AuditEvent.seq).where(
        AuditEvent.user_id == other.id, AuditEvent.event == "login.success")).scalar_one()
    mine = _browser(ctx, "10.1.2.3")
    login(mine)
    token = csrf_from(mine.get("/account/activity").text)
    done = mine.post("/account/activity/not-me", data={"csrf_token": token,
                                                       "event": str(foreign)})
    assert done.status_code == 200
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "account.compromise_reported")).scalar_one()
    assert event.user_id == user.id and "reported_seq" not in event.detail
    # the other account is untouched
    assert theirs.get("/account").status_code == 200
    assert not db.session.get(User, other.id).must_change_password
    assert len(mailbox.to(SECURITY)) == 1


def test_needs_a_session_and_the_csrf_token(ctx, client):
    token = csrf_from(client.get("/login").text)
    response = client.post("/account/activity/not-me", data={"csrf_token": token})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    make_user()
    login(client)
    assert client.post("/account/activity/not-me").status_code == 400  # no CSRF token
    assert client.get("/account").status_code == 200  # nothing ended
    assert db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "account.compromise_reported")).first() is None
