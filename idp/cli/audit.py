"""`idp audit`: the audit trail."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from idp.audit.grants import statements
from idp.audit.service import anchor, check_anchor, verdict
from idp.auditstream import service as stream
from idp.cli.common import emit, json_option, with_app


@click.group("audit")
def audit_group() -> None:
    """Audit trail."""


@audit_group.command("verify")
@click.option("--anchor", "anchor_file", type=click.Path(dir_okay=False), default=None,
              help="also check an anchor written by `idp audit anchor` (JSON)")
@json_option
@with_app(ensure_keys=False)
def audit_verify(anchor_file: str | None, as_json: bool) -> None:
    """Check every writer's hash chain, their heads and cross-anchors; exit 1 on a break (or
    when the anchored event changed)."""
    kept, problem = None, None
    if anchor_file:
        try:
            with open(anchor_file) as handle:
                kept = json.load(handle)
        except (OSError, ValueError) as exc:
            click.echo(f"error: cannot read the anchor {anchor_file}: {exc}", err=True)
            sys.exit(2)
        if not isinstance(kept, dict):
            click.echo(f"error: {anchor_file} is not an anchor (a JSON object)", err=True)
            sys.exit(2)
    found = verdict()
    intact, count, broken = found.intact, found.events, found.first_broken_seq
    if kept is not None:
        problem = check_anchor(kept)
    text = (f"audit chain intact ({count} events in {found.chains} chains)" if intact
            else f"audit chain BROKEN at event {broken}: {found.problem}")
    if kept is not None:
        text += "\n" + (f"anchor event {kept.get('seq')} matches" if problem is None
                        else f"anchor MISMATCH: {problem}")
    data: dict[str, Any] = {"intact": intact, "events": count, "chains": found.chains,
                            "first_broken_seq": broken, "problem": found.problem}
    if kept is not None:
        data["anchor"] = {"seq": kept.get("seq"), "matches": problem is None,
                          "problem": problem}
    emit(as_json, data, text)
    sys.exit(0 if intact and problem is None else 1)


@audit_group.command("anchor")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="also write the anchor (JSON) to this file")
@json_option
@with_app(ensure_keys=False)
def audit_anchor(output: str | None, as_json: bool) -> None:
    """Print the latest event's seq, hash and time and every chain's head, to store outside
    the database; later `idp audit verify --anchor FILE` proves those events and everything
    before them in their chains unchanged."""
    found = anchor()
    if found is None:
        click.echo("error: the audit trail is empty", err=True)
        sys.exit(1)
    if output:
        with open(output, "w") as handle:
            json.dump(found, handle)
            handle.write("\n")
    emit(as_json, found, f"seq {found['seq']}  hash {found['hash']}  at {found['at']}")


@audit_group.command("grants")
@click.option("--role", required=True, help="the application's database role")
@click.option("--schema", default="public", show_default=True)
def audit_grants(role: str, schema: str) -> None:
    """Print the PostgreSQL grants that make the audit trail INSERT-only for the role."""
    try:
        click.echo(";\n".join(statements(role, schema)) + ";")
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@audit_group.group("stream")
def stream_group() -> None:
    """The audit stream to syslog, CEF and FHIR sinks (policies/audit_stream.toml)."""


@stream_group.command("status")
@json_option
@with_app(ensure_keys=False)
def stream_status(as_json: bool) -> None:
    """Per sink: the last seq it received, the head of the trail, the lag, the last error.
    Exit 1 when a sink is failing (an error since its last delivery)."""
    try:
        found = stream.status()
    except stream.SinkMisconfigured as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if not found:
        emit(as_json, [], "no audit stream sink is configured (IDP_AUDIT_SINK_<NAME>_URL)")
        return
    lines = [f"{s.name:<10} {s.format:<6} {s.target:<32} delivered {s.delivered_seq} of "
             f"{s.head_seq}  lag {s.lag}"
             + (f"  FAILING ({s.attempts} attempts, next {s.next_attempt_at}): {s.last_error}"
                if s.last_error else "") for s in found]
    emit(as_json, [s.as_dict() for s in found], "\n".join(lines))
    sys.exit(1 if any(s.last_error for s in found) else 0)


@stream_group.command("deliver")
@json_option
@with_app(ensure_keys=False)
def stream_deliver(as_json: bool) -> None:
    """Send every sink what it is owed (cron: every minute); a sink backing off after a
    failure waits its turn. Exit 1 when an attempt failed."""
    reports = stream.deliver_due()
    data = {name: report.as_dict() for name, report in reports.items()}
    emit(as_json, data, "\n".join(f"{name}: delivered {r.delivered} in {r.attempted} "
                                   f"attempts, {r.failed} failed"
                                   for name, r in reports.items()) or "no sink configured")
    sys.exit(1 if any(r.failed for r in reports.values()) else 0)
