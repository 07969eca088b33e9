"""`idp smart`: SMART App Launch upkeep."""

from __future__ import annotations

import sys

import click

from idp.cli.common import account, emit, json_option, with_app
from idp.context import policy
from idp.smart import practitioners


@click.group("smart")
def smart_group() -> None:
    """SMART App Launch."""


@smart_group.command("resolve-practitioners")
@click.option("--user", "login", default=None, help="only this account (username or NPI)")
@json_option
@with_app(ensure_keys=False)
def resolve_practitioners(login: str | None, as_json: bool) -> None:
    """Find each clinician's Practitioner on the EHR's FHIR server by NPI (fhirUser); run
    nightly. Prints a warning for every clinician left without fhirUser (no match, several
    matches, server unavailable) and exits 1 when there is one."""
    if not policy().smart.enabled:
        click.echo("error: SMART is switched off (policies/smart.toml)", err=True)
        sys.exit(2)
    if login:
        user = account(login)
        if not user.npi:
            click.echo(f"error: {login} has no NPI", err=True)
            sys.exit(2)
        found = [practitioners.resolve(user)]
    else:
        found = practitioners.resolve_all()
    warnings = [r.warning for r in found if r.warning]
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    resolved = sum(r.status == "resolved" for r in found)
    emit(as_json, [r.as_dict() for r in found],
         f"{resolved} of {len(found)} clinicians resolved to a Practitioner")
    sys.exit(1 if warnings else 0)
