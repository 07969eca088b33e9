"""Security alerts at sign-in: a new device and a new network each send one email (real SMTP)
and write an audit event and an alert; a known device on a known network sends none; a second
live session from another network is flagged; the admin console lists and triages alerts.

A "device" is a browser's cookie jar (its device cookie, idp_device): each test client below is
one browser; its user agent is for display only."""

from __future__ import annotations

from sqlalchemy import select, update

from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.security.alerts import network
from idp.security.models import SecurityAlert
from idp.sessions.models import SsoSession
from tests.helpers import csrf_from, login, make_user, same_device

LAPTOP = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"
LAPTOP_UPDATED = LAPTOP.replace("Chrome/126.0", "Chrome/127.0")
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Safari/604.1"


def _browser(app, ip: str = "10.1.2.3", agent: str = LAPTOP):
    http = app.test_client()
    http.environ_base.update({"REMOTE_ADDR": ip, "HTTP_USER_AGENT": agent})
    return http


def _signed_in(http, ip: str, agent: str, logout: bool = True):
    """Sign in with the browser `http` (its device cookie) from `ip` with user agent `agent`."""
    http.environ_base.update({"REMOTE_ADDR": ip, "HTTP_USER_AGENT": agent})
    assert login(http).status_code == 302
    if logout:
        page = http.get("/logout")
        if page.status_code == 200 and "csrf_token" in page.text:
            done = http.post("/logout", data={"csrf_token": csrf_from(page.text),
                                              "confirm": "yes"})
            assert done.status_code == 200
        assert http.get("/account").status_code == 302  # signed out
    return http


def _alerts() -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "alert.unusual_sign_in").order_by(AuditEvent.seq)).scalars())


def test_network_prefixes(ctx):  # prefix lengths from policies/alerts.toml
    assert network("10.1.2.3") == network("10.1.2.200") == "10.1.2.0/24"
    assert network("10.1.3.3") != network("10.1.2.3")
    assert network("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert network("not-an-ip") is None and network(None) is None


def test_first_and_familiar_sign_ins_send_nothing(ctx, mailbox):
    make_user()
    laptop = _browser(ctx)
    _signed_in(laptop, "10.1.2.3", LAPTOP)  # the first sign-in: nothing to compare with
    _signed_in(laptop, "10.1.2.77", LAPTOP)  # same device, same /24
    assert mailbox.to("drsmith@hospital.example") == []
    assert _alerts() == [] and db.session.execute(select(SecurityAlert)).first() is None


def test_new_device_sends_one_email(ctx, mailbox):
    user = make_user()
    _signed_in(_browser(ctx), "10.1.2.3", LAPTOP)
    _signed_in(_browser(ctx), "10.1.2.3", PHONE)  # another browser: no device cookie yet
    [mail] = mailbox.to(user.email)
    body = mailbox.body(mail)
    assert mail["Subject"] == "New sign-in to your account"
    assert "device or browser not used before" in body and "network" not in body.split(
        "with:")[1].split("Browser:")[0]
    assert "contact your IT helpdesk" in body
    [event] = _alerts()
    assert event.detail["reasons"] == ["new_device"] and event.user_id == user.id
    alert = db.session.execute(select(SecurityAlert)).scalar_one()
    assert alert.state == "new" and alert.detail["ip"] == "10.1.2.3"
    assert alert.detail["user_agent"] == PHONE  # shown, not compared
    assert "Browser: " + PHONE in body
    assert audit.verify()[0]


def test_new_network_sends_one_email(ctx, mailbox):
    user = make_user()
    laptop = _browser(ctx)
    _signed_in(laptop, "10.1.2.3", LAPTOP)
    _signed_in(laptop, "172.16.9.4", LAPTOP)
    [mail] = mailbox.to(user.email)
    assert "network not seen for your account" in mailbox.body(mail)
    assert _alerts()[0].detail["reasons"] == ["new_network"]
    # the same network again is known now
    _signed_in(laptop, "172.16.9.99", LAPTOP)
    assert len(mailbox.to(user.email)) == 1


def test_a_network_not_seen_for_90_days_counts_as_new(ctx, mailbox, frozen):
    user = make_user()
    laptop = _browser(ctx)
    _signed_in(laptop, "10.1.2.3", LAPTOP)
    _signed_in(laptop, "172.16.9.4", LAPTOP)
    mailbox.messages.clear()
    frozen.advance(91 * 86400)
    from tests.helpers import acknowledge_days

    acknowledge_days(user, range(-1, 3))
    db.session.commit()
    _signed_in(laptop, "10.1.2.3", LAPTOP)
    assert len(mailbox.to(user.email)) == 1
    # the device window is 90 days too (alerts.toml): the laptop's cookie is not remembered
    assert _alerts()[-1].detail["reasons"] == ["new_device", "new_network"]


def test_simultaneous_sessions_from_two_networks(ctx, mailbox):
    user = make_user()
    laptop = _browser(ctx)
    _signed_in(laptop, "10.1.2.3", LAPTOP)
    _signed_in(laptop, "172.16.9.4", LAPTOP)  # new network (alert 1), logged out after
    mailbox.messages.clear()
    _signed_in(laptop, "10.1.2.3", LAPTOP, logout=False)  # still signed in here
    assert mailbox.to(user.email) == []
    window = _browser(ctx)  # a second window of the same browser (its device cookie)
    same_device(laptop, window)
    _signed_in(window, "172.16.9.4", LAPTOP, logout=False)  # known network, but concurrent
    [mail] = mailbox.to(user.email)
    assert "also signed in from another network" in mailbox.body(mail)
    assert _alerts()[-1].detail["reasons"] == ["simultaneous_sessions"]


def test_security_staff_triage_alerts(ctx, mailbox):
    make_user()
    _signed_in(_browser(ctx), "10.1.2.3", LAPTOP)
    _signed_in(_browser(ctx), "10.1.2.3", PHONE)
    officer = make_user("sec.officer", npi=None, role="security")
    staff = ctx.test_client()
    login(staff, "sec.officer")
    page = staff.get("/admin/alerts")
    assert page.status_code == 200 and "unusual_sign_in" in page.text
    # readable: what happened and to whom (name and username), from where, never raw JSON
    assert "Unusual sign-in" in page.text and "(drsmith)" in page.text
    assert "10.1.2.3" in page.text and "&#34;" not in page.text and "{" not in page.text
    alert = db.session.execute(select(SecurityAlert)).scalar_one()
    response = staff.post(f"/admin/alerts/{alert.id}/state",
                          data={"state": "acknowledged", "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302
    db.session.refresh(alert)
    assert alert.state == "acknowledged" and alert.updated_by == f"admin:{officer.id}"
    assert staff.post(f"/admin/alerts/{alert.id}/state", data={
        "state": "bogus", "csrf_token": csrf_from(page.text)}).status_code == 400
    assert "state=new" in page.text


def test_same_device_and_same_ip_as_before_sends_no_alert_email(ctx, mailbox):
    user = make_user()
    laptop, phone = _browser(ctx), _browser(ctx)
    _signed_in(laptop, "10.1.2.3", LAPTOP)
    _signed_in(phone, "10.1.2.3", PHONE)  # a new device: one alert email

    def alert_emails() -> int:
        return len([m for m in mailbox.to(user.email)
                    if m["Subject"] == "New sign-in to your account"])

    before, events = alert_emails(), len(_alerts())
    assert before == 1 and events == 1
    _signed_in(laptop, "10.1.2.3", LAPTOP)  # the same browser and IP as the first session
    _signed_in(phone, "10.1.2.3", PHONE)  # and as the second
    assert alert_emails() == before
    assert len(_alerts()) == events
    assert len(db.session.execute(select(SecurityAlert)).scalars().all()) == 1


# -- the device cookie decides "new device", not the user agent ---------------------------------
def _sessions(user) -> list[SsoSession]:
    return list(db.session.execute(select(SsoSession).where(SsoSession.user_id == user.id)
                                   .order_by(SsoSession.created_at)).scalars())


def test_a_browser_update_is_not_a_new_device(ctx, mailbox):
    user = make_user()
    laptop = _browser(ctx)
    _signed_in(laptop, "10.1.2.3", LAPTOP)
    _signed_in(laptop, "10.1.2.3", LAPTOP_UPDATED)  # the same browser, a new version
    assert _alerts() == [] and mailbox.to(user.email) == []
    first, second = _sessions(user)
    assert first.device_hash and first.device_hash == second.device_hash
    assert (first.user_agent, second.user_agent) == (LAPTOP, LAPTOP_UPDATED)  # for display


def test_another_browser_with_the_same_user_agent_is_a_new_device(ctx, mailbox):
    user = make_user()
    _signed_in(_browser(ctx), "10.1.2.3", LAPTOP)
    _signed_in(_browser(ctx), "10.1.2.3", LAPTOP)  # another machine, the same browser build
    [mail] = mailbox.to(user.email)
    assert mail["Subject"] == "New sign-in to your account"
    assert "device or browser not used before" in mailbox.body(mail)
    [event] = _alerts()
    assert event.detail["reasons"] == ["new_device"] and event.user_id == user.id
    assert db.session.execute(select(SecurityAlert)).scalar_one().detail["reasons"] == [
        "new_device"]
    first, second = _sessions(user)
    assert first.device_hash != second.device_hash


def test_sessions_without_a_device_hash_never_match(ctx, mailbox):
    user = make_user()
    laptop = _browser(ctx)
    _signed_in(laptop, "10.1.2.3", LAPTOP)
    db.session.execute(update(SsoSession).values(device_hash=None))  # as before migration 0014
    db.session.commit()
    _signed_in(laptop, "10.1.2.3", LAPTOP)
    assert [e.detail["reasons"] for e in _alerts()] == [["new_device"]]
    assert len(mailbox.to(user.email)) == 1


def test_alert_emails_go_to_the_policy_recipient_roles(ctx, monkeypatch):
    """alerts.toml recipient_roles: security staff by default; another role when the policy
    says so."""
    import dataclasses

    from idp.context import runtime
    from idp.security.alerts import security_staff

    officer = make_user("sec.officer", npi=None, role="security")
    root = make_user("root.admin", npi=None, role="admin")
    db.session.commit()
    assert [u.id for u in security_staff()] == [officer.id]
    rt = runtime()
    rules = dataclasses.replace(rt.policy.alerts, recipient_roles=("admin",))
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, alerts=rules))
    assert [u.id for u in security_staff()] == [root.id]
