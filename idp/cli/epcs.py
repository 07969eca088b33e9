"""`idp epcs`: the prescribers' DEA registrations (recorded at identity proofing, 21 CFR
1311.105/.110), the DEA-expiry report and the periodic review of who holds the EPCS permission
(1311.125)."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from idp.cli.common import account, emit, json_option, with_app
from idp.epcs import service
from idp.extensions import db


@click.group("epcs")
def epcs_group() -> None:
    """Electronic prescribing of controlled substances."""


@epcs_group.command("dea-set")
@click.argument("login")
@click.option("--number", required=True, help="DEA registration number, e.g. AR1234563")
@click.option("--expires", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="expiry date of the registration (YYYY-MM-DD)")
@click.option("--checked-by", required=True,
              help="who checked the registration against the DEA's records")
@json_option
@with_app(ensure_keys=False)
def dea_set(login: str, number: str, expires: datetime, checked_by: str, as_json: bool) -> None:
    """Record or renew LOGIN's DEA registration (audited epcs.dea_recorded)."""
    user = account(login)
    expires_on = expires.date()
    try:
        held = service.record_dea(user, number, expires_on, checked_by, actor="cli")
    except service.EpcsError as exc:
        db.session.rollback()
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    db.session.commit()
    emit(as_json, {"username": user.username, "dea_number": held.dea_number,
                   "expires_on": held.expires_on.isoformat(), "checked_by": held.checked_by},
         f"{user.username}: DEA {held.dea_number} until {held.expires_on.isoformat()}")


@epcs_group.command("dea-report")
@click.option("--within-days", type=click.IntRange(0, 3650), default=None,
              help="expiring within this many days (default: policies/epcs.toml "
                   "dea_expiry_warning_days)")
@json_option
@with_app(ensure_keys=False)
def dea_report(within_days: int | None, as_json: bool) -> None:
    """DEA registrations expired or expiring soon, soonest first."""
    rows = service.dea_report(within_days)
    lines = [f"{r['expires_on']}  {r['username']:<16} {r['dea_number']}  "
             f"{'EXPIRED' if r['expired'] else str(r['days_left']) + ' days'}" for r in rows]
    emit(as_json, rows, "\n".join(lines) or "no DEA registration expires soon")


@epcs_group.command("access-report")
@json_option
@with_app(ensure_keys=False)
def access_report(as_json: bool) -> None:
    """Practitioners holding the EPCS permission, with its two approvers; those due for
    re-approval first (policies/epcs.toml reapproval_interval_days)."""
    rows = service.access_report()
    lines = [f"{'DUE ' if r['due'] else '    '}{r['username']:<16} approved "
             f"{r['approved_at'][:10]} by {r['approved_by']} (proposed by {r['proposed_by']}); "
             f"DEA {r['dea_expires_on'] or 'not on file'}"
             f"{' EXPIRED' if r['dea_expired'] else ''}; EPCS keys {r['epcs_keys']}"
             for r in rows]
    emit(as_json, rows, "\n".join(lines) or "no practitioner holds the EPCS permission")
