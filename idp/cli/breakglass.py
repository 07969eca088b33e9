"""`idp breakglass`: emergency access upkeep (cron) and its report."""

from __future__ import annotations

import sys

import click

from idp.breakglass import service
from idp.cli.common import emit, json_option, with_app
from idp.context import policy


def _enabled() -> None:
    if not policy().breakglass.enabled:
        click.echo("error: break-glass is switched off (policies/breakglass.toml)", err=True)
        sys.exit(2)


@click.group("breakglass")
def breakglass_group() -> None:
    """Break-glass emergency access."""


@breakglass_group.command("sweep")
@json_option
@with_app(ensure_keys=False)
def sweep(as_json: bool) -> None:
    """Record the end of entitlements that ran out and escalate overdue reviews (cron)."""
    _enabled()
    done = service.sweep()
    emit(as_json, {"ended": done.ended, "escalated": done.escalated},
         f"{done.ended} emergency access episode(s) ended, {done.escalated} overdue "
         "review(s) escalated")


@breakglass_group.command("report")
@json_option
@with_app(ensure_keys=False)
def report(as_json: bool) -> None:
    """Every episode: who, when, why, reviewer and outcome."""
    _enabled()
    rows = service.report()
    lines = [f"{r['started'][:16]}  {r['user']:<16} {r['reason'] or '':<24} "
             f"{r['reviewer'] or '-':<16} "
             f"{r['outcome'] or ('OVERDUE' if r['overdue'] else 'waiting')}" for r in rows]
    emit(as_json, rows, "\n".join(lines) or "no emergency access episode")
