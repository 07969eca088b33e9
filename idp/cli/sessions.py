"""`idp sessions`: SSO sessions and their back-channel logout (cron jobs)."""

from __future__ import annotations

import click

from idp.cli.common import emit, json_option, with_app
from idp.extensions import db as sqla
from idp.oidc.backchannel import deliver_due, deliver_pending
from idp.sessions.service import expire


@click.group("sessions")
def sessions_group() -> None:
    """SSO sessions and their back-channel logout (cron jobs)."""


@sessions_group.command("deliver")
@click.option("--limit", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="at most this many attempts in this run")
@json_option
@with_app()
def sessions_deliver(limit: int, as_json: bool) -> None:
    """Send the back-channel logout tokens that are due (new ones, and retries whose back-off
    has passed). For cron, every minute."""
    report = deliver_due(limit=limit)
    emit(as_json, report.as_dict(),
         f"{report.attempted} attempted, {report.delivered} delivered, {report.failed} failed "
         f"({report.abandoned} abandoned); {report.pending} still owed")


@sessions_group.command("expire")
@json_option
@with_app()
def sessions_expire(as_json: bool) -> None:
    """End the sessions past their idle or absolute timeout and send their relying parties
    logout tokens. For cron, every minute."""
    ended = expire()
    sqla.session.commit()
    report = deliver_pending()
    data = {"ended": {reason: len(sids) for reason, sids in ended.items()},
            "backchannel": report.as_dict() if report else None}
    text = ", ".join(f"{len(sids)} {reason}" for reason, sids in ended.items())
    if report:
        text += (f"; logout tokens: {report.delivered} delivered, {report.failed} failed, "
                 f"{report.pending} still owed")
    emit(as_json, data, f"sessions ended: {text}")
