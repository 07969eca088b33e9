"""The onboarding reports registered through idp.reports' extension point, on seeded data with
known answers: licenses expiring within 30/60/90 days and applications past the 48 h SLA."""

from __future__ import annotations

from datetime import timedelta

from idp import clock
from idp.extensions import db
from idp.onboarding.models import Application, Facility
from idp.reports import service as reports
from tests.helpers import make_user


def _licensed(username: str, npi: str, days_left: int, **flags: bool) -> None:
    user = make_user(username, npi=npi, totp=False)
    for name, value in flags.items():
        setattr(user, name, value)
    user.license_state, user.license_number = "CA", "A123456"
    user.license_expires = clock.now().date() + timedelta(days=days_left)


def test_licenses_expiring_sorted_into_30_60_90_day_buckets(ctx):
    _licensed("dr.soon", "1234567893", 10)
    _licensed("dr.month", "1245319599", 45)
    _licensed("dr.quarter", "1003000126", 90)
    _licensed("dr.later", "1003000134", 91)
    _licensed("dr.lapsed", "1003000142", -3, clinical_suspended=True)
    _licensed("dr.gone", "1003000159", 5, disabled=True)
    make_user("clerk", npi=None, role="admin_staff", totp=False)  # no license at all
    db.session.commit()

    result = reports.build("licenses_expiring")

    assert [(r["username"], r["days_left"], r["within_days"], r["clinical_suspended"])
            for r in result.rows] == [("dr.lapsed", -3, 0, True), ("dr.soon", 10, 30, False),
                                      ("dr.month", 45, 60, False), ("dr.quarter", 90, 90, False)]
    assert result.as_csv().splitlines()[0].startswith("user_id,username,role,license_state")


def test_applications_past_the_verification_sla(ctx, frozen):
    site = Facility(name="General Hospital", active=True, created_at=clock.now())
    db.session.add(site)
    db.session.flush()

    def application(name: str, status: str, hours_ago: float) -> None:
        db.session.add(Application(
            status=status, given_name=name, family_name="Applicant",
            email=f"{name}@example.org", phone="+15555550100", role="physician",
            npi="1234567893", facility_id=site.id, created_at=clock.now(),
            submitted_at=clock.now() - timedelta(hours=hours_ago)))

    application("late", "pending", 50)          # past the 48 h SLA
    application("asked", "info_requested", 72)  # still open, past it
    application("fresh", "pending", 47)         # within it
    application("decided", "approved", 100)     # decided: not waiting
    application("unconfirmed", "email_pending", 100)  # never reached the queue
    db.session.commit()

    rows = reports.build("verification_sla").rows

    assert [(r["name"], r["status"], r["age_hours"]) for r in rows] == [
        ("asked Applicant", "info_requested", 72), ("late Applicant", "pending", 50)]
    assert {r["facility"] for r in rows} == {"General Hospital"}


def test_the_expiry_buckets_are_policy(ctx, monkeypatch):
    """onboarding.toml license_expiry_buckets: other buckets sort the same licenses anew, and
    the last bucket is the report's horizon."""
    import dataclasses

    from idp.context import runtime

    rt = runtime()
    rules = dataclasses.replace(rt.policy.onboarding, license_expiry_buckets=(14, 120))
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, onboarding=rules))
    _licensed("dr.soon", "1234567893", 10)
    _licensed("dr.month", "1245319599", 45)
    _licensed("dr.later", "1003000134", 100)
    _licensed("dr.beyond", "1003000126", 121)
    db.session.commit()
    assert [(r["username"], r["within_days"])
            for r in reports.build("licenses_expiring").rows] == [
        ("dr.soon", 14), ("dr.month", 120), ("dr.later", 120)]
