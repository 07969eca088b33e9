"""Onboarding's compliance reports, registered with idp.reports.registry's @report extension
point: licenses expiring within 30/60/90 days (onboarding.toml license_expiry_buckets), and
applications past the verification SLA."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.context import policy
from idp.extensions import db
from idp.onboarding import service as onboarding
from idp.reports.registry import Range, report


@report("licenses_expiring", "Licenses expiring in 30/60/90 days",
        ("user_id", "username", "role", "license_state", "license_number", "license_expires",
         "days_left", "within_days", "clinical_suspended"), ranged=False,
        description="Enabled accounts whose license expires within 90 days (or has expired "
        "and is suspended), soonest first; within_days is 30, 60 or 90 (0: expired).")
def licenses_expiring(span: Range | None) -> list[dict[str, Any]]:
    today = clock.now().date()
    # days until expiry, inclusive upper bounds (onboarding.toml license_expiry_buckets)
    buckets = policy().onboarding.license_expiry_buckets
    rows = []
    for user in db.session.execute(
            select(User).where(User.disabled.is_(False), User.license_expires.is_not(None))
            .order_by(User.license_expires, User.username)).scalars():
        days_left = (user.license_expires - today).days
        if days_left > buckets[-1]:
            continue
        within = 0 if days_left < 0 else next(b for b in buckets if days_left <= b)
        rows.append({"user_id": user.id, "username": user.username, "role": user.role,
                     "license_state": user.license_state, "license_number": user.license_number,
                     "license_expires": user.license_expires, "days_left": days_left,
                     "within_days": within, "clinical_suspended": bool(user.clinical_suspended)})
    return rows


@report("verification_sla", "Applications past the verification SLA",
        ("application_id", "name", "role", "facility", "status", "submitted_at", "age_hours"),
        ranged=False,
        description="Open applications (email confirmed, no decision) waiting longer than the "
        "SLA in policies/onboarding.toml (48 hours), oldest first.")
def verification_sla(span: Range | None) -> list[dict[str, Any]]:
    now = clock.now()
    rows = []
    for item in onboarding.queue(status="open"):
        if not onboarding.overdue(item, now):
            continue
        rows.append({"application_id": item.id,
                     "name": f"{item.given_name} {item.family_name}",
                     "role": item.role, "facility": item.facility.name if item.facility else "",
                     "status": item.status, "submitted_at": item.submitted_at,
                     "age_hours": int(onboarding.age(item, now).total_seconds() // 3600)})
    return rows
