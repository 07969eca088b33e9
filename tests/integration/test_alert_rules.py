"""Alert rules from policies/alerts.toml, with known answers: the simultaneous-sessions
threshold (user and security staff told), repeated lockouts of one account and lockouts of
many accounts from one IP (security staff told once per window), and the alert's state in the
console (new -> acknowledged -> resolved). The sign-ins here are one browser (one device
cookie, see same_device) in several windows, so only the network rules speak."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select

from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.security.models import SecurityAlert
from tests.helpers import csrf_from, login, make_user, same_device

LAPTOP = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"
SECURITY = "sec.officer@hospital.example"


def _browser(app, ip: str, agent: str = LAPTOP, device=None):
    """A test client from `ip`; with `device` (another client), a window of that browser."""
    http = app.test_client()
    http.environ_base.update({"REMOTE_ADDR": ip, "HTTP_USER_AGENT": agent})
    if device is not None:
        same_device(device, http)
    return http


@pytest.fixture
def alert_policy(ctx, monkeypatch):
    """Replace values of alerts.toml for one test."""
    runtime = ctx.extensions["idp"]

    def patch(**values) -> None:
        alerts = dataclasses.replace(runtime.policy.alerts, **values)
        monkeypatch.setattr(runtime, "policy", dataclasses.replace(runtime.policy,
                                                                   alerts=alerts))
    return patch


def _security_mail(mailbox, subject_start: str) -> list:
    return [m for m in mailbox.to(SECURITY) if m["Subject"].startswith(subject_start)]


def _alerts(kind: str) -> list[SecurityAlert]:
    return list(db.session.execute(select(SecurityAlert).where(SecurityAlert.kind == kind)
                                   .order_by(SecurityAlert.id)).scalars())


def test_simultaneous_sessions_beyond_the_threshold(ctx, mailbox, alert_policy):
    alert_policy(max_concurrent_networks=2)
    user = make_user()
    make_user("sec.officer", npi=None, role="security")
    assert login(first := _browser(ctx, "10.1.2.3")).status_code == 302
    assert login(_browser(ctx, "10.7.7.7", device=first)).status_code == 302  # 2 networks: at
    assert _security_mail(mailbox, "Simultaneous sessions") == []  # the threshold
    assert [a.detail["reasons"] for a in _alerts("unusual_sign_in")] == [["new_network"]]
    assert login(_browser(ctx, "172.16.9.4", device=first)).status_code == 302  # beyond it
    [staff_mail] = _security_mail(mailbox, "Simultaneous sessions")
    body = mailbox.body(staff_mail)
    assert "drsmith" in body and "3 live sessions" in body and "172.16.9.4" in body
    user_mails = [m for m in mailbox.to(user.email) if "also signed in from another network"
                  in mailbox.body(m)]
    assert len(user_mails) == 1
    assert _alerts("unusual_sign_in")[-1].detail["reasons"] == [
        "new_network", "simultaneous_sessions"]


def test_one_network_at_a_time_is_not_simultaneous(ctx, mailbox, alert_policy):
    alert_policy(max_concurrent_networks=1)
    make_user()
    make_user("sec.officer", npi=None, role="security")
    assert login(first := _browser(ctx, "10.1.2.3")).status_code == 302
    assert login(_browser(ctx, "10.1.2.9", device=first)).status_code == 302  # same /24
    assert _security_mail(mailbox, "Simultaneous sessions") == []
    assert _alerts("unusual_sign_in") == []


def test_prefix_length_comes_from_policy(ctx, mailbox, alert_policy):
    alert_policy(ipv4_prefix=16)
    user = make_user()
    assert login(first := _browser(ctx, "10.1.2.3")).status_code == 302
    assert login(_browser(ctx, "10.1.200.3", device=first)).status_code == 302  # same /16
    assert _alerts("unusual_sign_in") == [] and mailbox.to(user.email) == []


def _lock(app, frozen, username: str, ip: str) -> None:
    """Five wrong passwords lock the account (lockout.toml); then let the lock run out."""
    http = _browser(app, ip)
    for _ in range(5):
        assert login(http, username, password="Wrong-password-123!", mfa=False
                     ).status_code == 401
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "account.locked").order_by(AuditEvent.seq.desc())).scalars().first()
    assert event is not None and event.ip == ip
    frozen.advance(31 * 60)


def test_repeated_lockouts_of_one_account(ctx, mailbox, frozen):
    user = make_user()
    make_user("sec.officer", npi=None, role="security")
    _lock(ctx, frozen, "drsmith", "10.1.2.3")
    _lock(ctx, frozen, "drsmith", "10.1.2.3")
    assert _security_mail(mailbox, "Repeated lockouts") == [] and \
        _alerts("repeated_lockouts") == []
    _lock(ctx, frozen, "drsmith", "10.1.2.3")  # the third within 24 hours
    [mail] = _security_mail(mailbox, "Repeated lockouts")
    assert "drsmith" in mail["Subject"] and "locked 3 times" in mailbox.body(mail)
    [alert] = _alerts("repeated_lockouts")
    assert alert.user_id == user.id and alert.state == "new" and alert.detail["lockouts"] == 3
    _lock(ctx, frozen, "drsmith", "10.1.2.3")  # a fourth: already alerted in this window
    assert len(_security_mail(mailbox, "Repeated lockouts")) == 1
    assert _alerts("lockouts_from_ip") == []  # one account only
    events = db.session.execute(select(AuditEvent.event).where(
        AuditEvent.event.in_(("account.locked", "alert.repeated_lockouts")))).scalars().all()
    assert events.count("account.locked") == 4 and events.count("alert.repeated_lockouts") == 1
    assert audit.verify()[0]


def test_lockouts_spread_over_a_day_do_not_count(ctx, mailbox, frozen):
    make_user()
    make_user("sec.officer", npi=None, role="security")
    for _ in range(3):
        _lock(ctx, frozen, "drsmith", "10.1.2.3")
        frozen.advance(12 * 3600)  # 3 lockouts, but never 3 within 24 hours
    assert _alerts("repeated_lockouts") == []
    assert _security_mail(mailbox, "Repeated lockouts") == []


def test_lockouts_of_many_accounts_from_one_ip(ctx, mailbox, frozen):
    make_user("sec.officer", npi=None, role="security")
    for name in ("dr.a", "dr.b"):
        make_user(name, npi=None)
        _lock(ctx, frozen, name, "203.0.113.9")
    make_user("dr.c", npi=None)
    _lock(ctx, frozen, "dr.c", "198.51.100.1")  # another address: does not count
    assert _alerts("lockouts_from_ip") == []
    make_user("dr.d", npi=None)
    _lock(ctx, frozen, "dr.d", "203.0.113.9")  # the third account from this address
    [mail] = _security_mail(mailbox, "Lockouts of 3 accounts from 203.0.113.9")
    assert "password guessing" in mailbox.body(mail)
    [alert] = _alerts("lockouts_from_ip")
    assert alert.user_id is None and alert.detail["ip"] == "203.0.113.9"
    assert alert.detail["accounts"] == 3
    assert _alerts("repeated_lockouts") == []


def test_security_staff_move_an_alert_through_its_states(ctx, mailbox, frozen):
    make_user()
    officer = make_user("sec.officer", npi=None, role="security")
    for _ in range(3):
        _lock(ctx, frozen, "drsmith", "10.1.2.3")
    [alert] = _alerts("repeated_lockouts")
    staff = ctx.test_client()
    assert login(staff, "sec.officer").status_code == 302
    page = staff.get("/admin/alerts?state=new")
    assert page.status_code == 200 and "repeated_lockouts" in page.text
    for state in ("acknowledged", "resolved"):
        done = staff.post(f"/admin/alerts/{alert.id}/state",
                          data={"state": state, "csrf_token": csrf_from(page.text)})
        assert done.status_code == 302
        db.session.refresh(alert)
        assert alert.state == state and alert.updated_by == f"admin:{officer.id}"
    assert "repeated_lockouts" not in staff.get("/admin/alerts?state=new").text
    assert "repeated_lockouts" in staff.get("/admin/alerts?state=resolved").text
    changes = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "alert.state_changed").order_by(AuditEvent.seq)).scalars().all()
    assert [e.detail["state"] for e in changes] == ["acknowledged", "resolved"]
