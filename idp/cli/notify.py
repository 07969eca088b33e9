"""`idp notify deliver`: the mail outbox's sender job (cron or a systemd timer)."""

from __future__ import annotations

import click

from idp.cli.common import emit, json_option, with_app
from idp.notify.outbox import deliver_due


@click.group("notify")
def notify_group() -> None:
    """Outgoing email."""


@notify_group.command("deliver")
@click.option("--limit", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="at most this many attempts in this run")
@json_option
@with_app(ensure_keys=False)
def notify_deliver(limit: int, as_json: bool) -> None:
    """Send the queued mails that are due (retries whose back-off has passed), then delete
    delivered and abandoned rows past the retention. For cron, every minute. Exit 1 when a
    due mail failed again (the mail server is still down)."""
    report = deliver_due(limit=limit)
    emit(as_json, report.as_dict(),
         f"{report.attempted} attempted, {report.delivered} delivered, {report.failed} failed "
         f"({report.abandoned} abandoned), {report.purged} purged; {report.pending} queued")
    if report.failed:
        raise SystemExit(1)
