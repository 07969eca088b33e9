"""`idp reports <name> [--from D] [--to D] [--format csv|json]`."""

from __future__ import annotations

import json
import sys

import click

from idp.audit import service as audit
from idp.cli.common import with_app
from idp.extensions import db
from idp.reports import service


@click.command("reports")
@click.argument("name", required=False)
@click.option("--from", "start", help="start of the range: 2026-01-31 or 2026-01-31T14:00 (UTC)")
@click.option("--to", "end", help="end of the range (a date counts its whole day); default now")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="same as --format json")
@with_app(ensure_keys=False)
def reports_command(name: str | None, start: str | None, end: str | None, fmt: str,
                    as_json: bool) -> None:
    """Compliance reports; without NAME, list them. Each run is audited (actor cli)."""
    if not name:
        listing = {s.name: s.title for s in service.REPORTS.values()}
        click.echo(json.dumps(listing, indent=2) if as_json or fmt == "json" else
                   "\n".join(f"{k}\t{v}" for k, v in sorted(listing.items())))
        return
    try:
        result = service.build(name, start, end)
    except service.ReportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    fmt = "json" if as_json else fmt
    audit.record("admin.report_exported", actor="cli", report=result.name, format=fmt,
                 range=result.range.as_dict() if result.range else None, rows=len(result.rows))
    db.session.commit()
    click.echo(json.dumps(result.as_json(), indent=2) if fmt == "json" else
               result.as_csv(), nl=fmt == "json")
