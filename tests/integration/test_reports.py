"""Compliance reports on seeded data with known answers: role and EPCS permission holdings over
date ranges, failed logins and lockouts by user and IP, MFA coverage by role and factor type,
dormant accounts and their disable action; CSV and JSON exports, access by role, the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.epcs import service as epcs
from idp.extensions import db
from idp.mfa.models import Factor
from idp.reports import service as reports
from tests.helpers import csrf_from, login, make_user

DAY = 86400


def events(name: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name)
                                   .order_by(AuditEvent.seq)).scalars())


def factor(user: User, kind: str) -> None:
    db.session.add(Factor(user_id=user.id, kind=kind, label=kind, created_at=clock.now(),
                          confirmed_at=clock.now(), destination="+15555550100"
                          if kind == "sms" else None,
                          credential_id=f"cred-{user.id}" if kind == "webauthn" else None,
                          public_key=b"\x01" if kind == "webauthn" else None))


def created(user: User, days_ago: int) -> None:
    user.created_at = clock.now() - timedelta(days=days_ago)


@pytest.fixture
def seeded(ctx, frozen):
    """physician: drsmith (app), drjones (app + key), drlee (nothing, created 200 days ago);
    nurse_practitioner: np.one (SMS, 30 days old); admin: admin.one, admin.two; security:
    sec.one (these 20 days old); admin_staff: clerk.old (400 days old, last sign-in 100 days
    ago), clerk.gone (disabled, 300 days old).
    drjones became a physician 5 days ago; drsmith held EPCS from day -8 to day -2, drjones
    from day -1 on."""
    users = {}
    for name, role, npi in (("drsmith", "physician", "1234567893"),
                            ("drjones", "physician", "1245319599"),
                            ("admin.one", "admin", None), ("admin.two", "admin", None),
                            ("sec.one", "security", None), ("clerk.old", "admin_staff", None)):
        users[name] = make_user(name, npi=npi, role=role)
        created(users[name], 400 if name == "clerk.old" else 20)
    users["drlee"] = make_user("drlee", npi=None, role="physician", totp=False)
    created(users["drlee"], 200)
    users["np.one"] = make_user("np.one", npi=None, role="nurse_practitioner", totp=False)
    created(users["np.one"], 30)
    factor(users["np.one"], "sms")
    factor(users["drjones"], "webauthn")
    users["clerk.gone"] = make_user("clerk.gone", npi=None, role="admin_staff")
    created(users["clerk.gone"], 300)
    users["clerk.gone"].disabled = True
    db.session.commit()

    frozen.advance(-100 * DAY)
    audit.record("login.success", user_id=users["clerk.old"].id, amr=["pwd", "otp"])
    frozen.advance(95 * DAY)  # day -5
    audit.record("user.role_changed", user_id=users["drjones"].id, actor="admin:1",
                 **{"from": "nurse_practitioner", "to": "physician"})
    frozen.advance(-3 * DAY)  # day -8
    grant = epcs.propose(users["drsmith"], users["admin.one"])
    epcs.approve(grant, users["admin.two"])
    frozen.advance(6 * DAY)  # day -2
    epcs.revoke(grant, users["admin.one"])
    frozen.advance(1 * DAY)  # day -1
    epcs.approve(epcs.propose(users["drjones"], users["admin.two"]), users["admin.one"])
    frozen.advance(1 * DAY)  # now
    db.session.commit()
    return users


def day(offset: int) -> str:
    return (clock.now() + timedelta(days=offset)).date().isoformat()


def rows_of(report: reports.Report, **match) -> list[dict]:
    return [r for r in report.rows if all(r.get(k) == v for k, v in match.items())]


def test_role_and_epcs_holdings_over_date_ranges(seeded):
    users = seeded
    full = reports.build("role_holdings", day(-10), day(0))
    assert [(r["value"], r["held_to"] is None) for r in rows_of(
        full, username="drjones", kind="role")] == [("nurse_practitioner", False),
                                                   ("physician", True)]
    assert [r["value"] for r in rows_of(full, username="drsmith", kind="role")] == [
        "physician"]
    held = rows_of(full, kind="epcs_permission")
    assert [(r["username"], r["held_to"] is not None) for r in held] == [
        ("drsmith", True), ("drjones", False)]
    smith = held[0]
    assert smith["held_from"].date() == (clock.now() - timedelta(days=8)).date()
    assert smith["held_to"].date() == (clock.now() - timedelta(days=2)).date()
    assert smith["granted_by"] == (f"admin:{users['admin.one'].id} + "
                                   f"admin:{users['admin.two'].id}")

    recent = reports.build("role_holdings", day(-3), day(0))
    assert [r["value"] for r in rows_of(recent, username="drjones", kind="role")] == [
        "physician"]
    assert [r["username"] for r in rows_of(recent, kind="epcs_permission")] == [
        "drsmith", "drjones"]
    before = reports.build("role_holdings", day(-30), day(-9))
    assert rows_of(before, kind="epcs_permission") == []
    earlier = reports.build("role_holdings", day(-60), day(-40))
    assert {r["username"] for r in earlier.rows} == {"clerk.old", "clerk.gone", "drlee"}
    between = reports.build("role_holdings", day(-7), day(-3))
    assert [(r["username"], r["held_to"]) for r in rows_of(between, kind="epcs_permission")
            ] == [("drsmith", None)]  # held through the whole range


def test_failed_logins_and_lockouts_by_user_and_ip(seeded, app, frozen):
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "10.0.0.7"
    for _ in range(3):  # three lockouts of drsmith from one address
        for _ in range(5):
            assert login(attacker, "drsmith", "Wrong-Password-99!").status_code == 401
        frozen.advance(31 * 60)
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.0.0.8"
    for _ in range(2):
        login(other, "drjones", "Wrong-Password-99!")
    login(other, "nobody-at-all", "Wrong-Password-99!")

    result = reports.build("failed_logins", day(-1), day(1))
    assert [(r["username"], r["ip"], r["failed_logins"], r["lockouts"]) for r in result.rows
            ] == [("drsmith", "10.0.0.7", 15, 3), ("drjones", "10.0.0.8", 2, 0),
                  (None, "10.0.0.8", 1, 0)]
    assert len(events("account.locked")) == 3
    assert reports.build("failed_logins", day(-30), day(-2)).rows == []


def test_mfa_coverage_by_role_and_factor_type(seeded):
    result = reports.build("mfa_coverage")
    by_role = {r["role"]: r for r in result.rows}
    assert by_role["physician"] == {"role": "physician", "accounts": 3, "with_mfa": 2,
                                    "coverage": "2/3", "percent": 66.7, "webauthn": 1,
                                    "totp": 2, "sms": 0, "email": 0}
    assert by_role["nurse_practitioner"]["coverage"] == "1/1"
    assert by_role["nurse_practitioner"]["sms"] == 1
    assert by_role["admin_staff"]["coverage"] == "1/1"  # clerk.gone is disabled: not counted
    assert result.range is None


def test_dormant_accounts_and_the_disable_action(seeded, app):
    users = seeded
    result = reports.build("dormant_accounts")
    assert [(r["username"], r["days_inactive"], r["last_login"] is None)
            for r in result.rows] == [("clerk.old", 100, False), ("drlee", 200, True)]

    admin = app.test_client()
    login(admin, "admin.one")
    page = admin.get("/admin/reports/dormant_accounts")
    assert page.status_code == 200 and "Disable clerk.old" in page.text
    token = csrf_from(page.text)
    done = admin.post(f"/admin/reports/dormant_accounts/{users['clerk.old'].id}/disable",
                      data={"csrf_token": token})
    assert done.status_code == 302
    db.session.expire_all()
    assert db.session.get(User, users["clerk.old"].id).disabled
    [marked] = events("user.dormant_disabled")
    assert marked.actor == f"admin:{users['admin.one'].id}"
    assert marked.detail["days_inactive"] == 100
    assert [e.user_id for e in events("user.disabled")] == [users["clerk.old"].id]
    # An account that is not dormant is not disabled from here.
    refused = admin.post(f"/admin/reports/dormant_accounts/{users['drsmith'].id}/disable",
                         data={"csrf_token": token})
    assert refused.status_code == 409
    assert not db.session.get(User, users["drsmith"].id).disabled
    assert admin.post(f"/admin/reports/dormant_accounts/{users['drlee'].id}/disable"
                      ).status_code == 400  # no CSRF token
    assert [r["username"] for r in reports.build("dormant_accounts").rows] == ["drlee"]


def test_exports_and_who_may_see_them(seeded, app):
    security = app.test_client()
    login(security, "sec.one")
    assert security.get("/admin/reports/").status_code == 200
    exported = security.get("/admin/reports/mfa_coverage?format=csv")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    assert "attachment" in exported.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(exported.text)))
    assert table[0] == ["role", "accounts", "with_mfa", "coverage", "percent", "webauthn",
                        "totp", "sms", "email"]
    assert ["physician", "3", "2", "2/3", "66.7", "1", "2", "0", "0"] in table
    body = security.get(f"/admin/reports/role_holdings?format=json&from={day(-10)}"
                        f"&to={day(0)}").get_json()
    assert body["report"] == "role_holdings" and body["range"]["from"].startswith(day(-10))
    assert {(r["username"], r["value"]) for r in body["rows"]
            if r["kind"] == "epcs_permission"} == {("drsmith", "epcs"), ("drjones", "epcs")}
    assert [e.detail["format"] for e in events("admin.report_exported")] == ["csv", "json"]
    # Security staff see reports but do not disable accounts; clinicians see nothing.
    page = security.get("/admin/reports/dormant_accounts")
    assert "Disable" not in page.text
    assert security.post(f"/admin/reports/dormant_accounts/{seeded['drlee'].id}/disable",
                         data={"csrf_token": csrf_from(security.get("/account").text)}
                         ).status_code == 403
    clinician = app.test_client()
    login(clinician, "drsmith")
    assert clinician.get("/admin/reports/mfa_coverage").status_code == 403
    # Bad input: a readable 4xx, never a 500.
    assert security.get("/admin/reports/nope").status_code == 404
    assert security.get("/admin/reports/failed_logins?from=yesterday").status_code == 400
    assert security.get(f"/admin/reports/failed_logins?from={day(0)}&to={day(-5)}"
                        ).status_code == 400
    assert security.get("/admin/reports/mfa_coverage?format=xml").status_code == 400


def test_the_cli_prints_csv_and_json(seeded, env):
    idp = str(Path(sys.executable).parent / "idp")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([idp, "reports", *args], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=60)

    listing = run()
    assert listing.returncode == 0 and "dormant_accounts" in listing.stdout
    out = run("mfa_coverage", "--format", "csv")
    assert out.returncode == 0, out.stderr
    assert "physician,3,2,2/3,66.7,1,2,0,0" in out.stdout.splitlines()
    body = json.loads(run("dormant_accounts", "--json").stdout)
    assert [r["username"] for r in body["rows"]] == ["clerk.old", "drlee"]
    held = json.loads(run("role_holdings", "--from", day(-7), "--to", day(-3),
                          "--format", "json").stdout)
    assert [r["username"] for r in held["rows"] if r["kind"] == "epcs_permission"] == [
        "drsmith"]
    bad = run("role_holdings", "--from", "nonsense")
    assert bad.returncode == 2 and "use a date" in bad.stderr
    assert run("nope").returncode == 2
    db.session.expire_all()
    assert any(e.actor == "cli" for e in events("admin.report_exported"))


def test_an_extension_report_registers_itself(ctx):
    """The hook the onboarding reports (licenses expiring, applications past SLA) use."""
    @reports.report("demo_extension", "Demo", ("n",), ranged=False)
    def _demo(span):
        return [{"n": 1}]

    try:
        assert reports.build("demo_extension").as_csv() == "n\n1\n"
    finally:
        reports.REPORTS.pop("demo_extension")
