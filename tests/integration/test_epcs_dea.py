"""The prescriber's DEA registration (21 CFR 1311.105/.110 identity proofing, 1311.125 a current
registration): recorded with who checked it, an expired one suspends EPCS signing, a
prescription naming another DEA number is refused, the DEA-expiry report lists what runs out."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.context import policy, runtime
from idp.epcs import service as epcs
from idp.epcs.models import DeaRegistration, EpcsCeremony
from idp.extensions import db
from tests.helpers import make_client, make_user, query
from tests.integration.test_cli import IDP
from tests.integration.test_epcs import grant, signing_request
from tests.integration.test_epcs_details import authorize_pushed, push, signing_params
from tests.integration.test_epcs_keys import seed_epcs_key, trust_test_vendor
from tests.integration.test_webauthn_service import SoftAuthenticator, password_step, totp_step

DEA = "AS1234563"  # the prescriber of test_epcs_details' prescriptions


@pytest.fixture
def prescriber(ctx, client, monkeypatch):
    trust_test_vendor(monkeypatch)
    user = make_user()
    seed_epcs_key(user, SoftAuthenticator())
    grant(user)
    password_step(client)
    totp_step(client)
    return user


def refusals() -> list[str]:
    return [e.detail["reason"] for e in db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "epcs.refused").order_by(AuditEvent.seq)).scalars()]


def today() -> date:
    return clock.now().date()


def test_an_expired_registration_suspends_signing_until_renewed(prescriber, client):
    epcs.record_dea(prescriber, DEA, today() - timedelta(days=1), "K. Ortiz (credentialing)",
                    actor="admin:1")
    db.session.commit()
    rp = make_client()
    response, _, _ = signing_request(client, rp)
    got = query(response.headers["Location"])
    assert got["error"] == "access_denied"
    assert f"expired on {(today() - timedelta(days=1)).isoformat()}" in \
        got["error_description"]
    assert refusals() == ["dea_expired"]
    assert db.session.execute(select(EpcsCeremony)).first() is None

    epcs.record_dea(prescriber, DEA, today() + timedelta(days=365), "K. Ortiz",
                    actor="admin:1")
    db.session.commit()
    renewed, _, _ = signing_request(client, rp)
    assert renewed.headers["Location"].startswith("/epcs/ceremony/")
    recorded = [e.detail for e in db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "epcs.dea_recorded").order_by(AuditEvent.seq)).scalars()]
    assert [r["checked_by"] for r in recorded] == ["K. Ortiz (credentialing)", "K. Ortiz"]


def test_the_registration_expires_at_the_end_of_its_last_day(prescriber, client):
    epcs.record_dea(prescriber, DEA, today(), "K. Ortiz", actor="admin:1")
    db.session.commit()
    response, _, _ = signing_request(client, make_client())
    assert response.headers["Location"].startswith("/epcs/ceremony/")


def test_prescriptions_naming_another_dea_number_are_refused(prescriber, client):
    epcs.record_dea(prescriber, "BJ1234563", today() + timedelta(days=30), "K. Ortiz",
                    actor="admin:1")
    db.session.commit()
    rp = make_client()
    params, _ = signing_params(rp)  # the prescriptions name AS1234563
    pushed = push(client, rp, params)
    assert pushed.status_code == 201, pushed.text
    answer = authorize_pushed(client, rp, pushed.get_json()["request_uri"])
    got = query(answer.headers["Location"])
    assert got["error"] == "access_denied" and "not the one on file" in \
        got["error_description"]
    assert refusals() == ["dea_mismatch"]


def test_when_policy_requires_it_no_registration_on_file_is_refused(prescriber, client,
                                                                     monkeypatch):
    monkeypatch.setattr(runtime(), "policy", dataclasses.replace(
        policy(), epcs=dataclasses.replace(policy().epcs, dea_registration_required=True)))
    response, _, _ = signing_request(client, make_client())
    got = query(response.headers["Location"])
    assert got["error"] == "access_denied" and "No DEA registration" in got["error_description"]
    assert refusals() == ["no_dea_registration"]


@pytest.mark.parametrize("number", ["AS1234564", "A1234563", "as12345", "1S1234563"])
def test_a_malformed_dea_number_is_not_recorded(ctx, number):
    user = make_user()
    with pytest.raises(epcs.EpcsError, match="Not a DEA registration number"):
        epcs.record_dea(user, number, today(), "K. Ortiz", actor="admin:1")


def test_the_cli_records_and_the_report_lists_what_expires(ctx, env):
    soon, late, gone = (make_user("dr.soon", npi=None), make_user("dr.late", npi=None),
                        make_user("dr.gone", npi=None))
    grant(gone)
    for user, days in ((soon, 10), (late, 400), (gone, -3)):
        epcs.record_dea(user, DEA, today() + timedelta(days=days), "K. Ortiz", actor="t")
    db.session.commit()
    done = subprocess.run([IDP, "epcs", "dea-set", "dr.late", "--number", "ar1234563",
                           "--expires", (today() + timedelta(days=20)).isoformat(),
                           "--checked-by", "J. Park", "--json"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dea_number"] == "AR1234563"
    bad = subprocess.run([IDP, "epcs", "dea-set", "dr.late", "--number", "AR1234560",
                          "--expires", "2030-01-01", "--checked-by", "J. Park"],
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Not a DEA registration number" in bad.stderr
    report = subprocess.run([IDP, "epcs", "dea-report", "--json"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    rows = json.loads(report.stdout)
    assert [(r["username"], r["expired"]) for r in rows] == \
        [("dr.gone", True), ("dr.soon", False), ("dr.late", False)]
    assert rows[0]["epcs_permission"] is True and rows[1]["days_left"] == 10
    db.session.expire_all()
    assert db.session.get(DeaRegistration, late.id).checked_by == "J. Park"


def test_the_access_report_lists_holders_and_who_is_due_for_reapproval(ctx, env, frozen,
                                                                       monkeypatch):
    """1311.125 periodic review: every active permission with its two administrators, those
    approved more than reapproval_interval_days ago first, with DEA and EPCS key status."""
    trust_test_vendor(monkeypatch)
    old = make_user("dr.old", npi=None)
    grant(old)
    seed_epcs_key(old, SoftAuthenticator())
    epcs.record_dea(old, DEA, today() - timedelta(days=1), "K. Ortiz", actor="t")
    db.session.commit()
    frozen.advance(seconds=(policy().epcs.reapproval_interval_days + 1) * 86400)
    new = make_user("dr.new", npi=None)
    admins = db.session.execute(select(User).where(
        User.username.in_(["admin.one", "admin.two"])).order_by(User.username)).scalars().all()
    epcs.approve(epcs.propose(new, admins[0]), admins[1])
    db.session.commit()
    rows = epcs.access_report()
    assert [(r["username"], r["due"]) for r in rows] == [("dr.old", True), ("dr.new", False)]
    assert (rows[0]["proposed_by"], rows[0]["approved_by"]) == ("admin.one", "admin.two")
    assert rows[0]["dea_expired"] is True and rows[0]["epcs_keys"] == 1
    assert rows[1]["dea_expires_on"] is None and rows[1]["epcs_keys"] == 0
    printed = subprocess.run([IDP, "epcs", "access-report", "--json"],
                             env={**os.environ, **env}, capture_output=True, text=True,
                             timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert {r["username"] for r in json.loads(printed.stdout)} == {"dr.old", "dr.new"}
    epcs.revoke(epcs.live_permission(new.id), admins[0])
    db.session.commit()
    assert [r["username"] for r in epcs.access_report()] == ["dr.old"]
