"""`idp ldap`: Active Directory / LDAP user federation (policies/federation.toml [ldap])."""

from __future__ import annotations

import sys

import click

from idp.cli.common import emit, json_option, with_app
from idp.extensions import db
from idp.federation.ldap import service
from idp.federation.ldap.directory import DirectoryUnavailable


@click.group("ldap")
def ldap_group() -> None:
    """The hospital directory (LDAP_URL, LDAP_BIND_DN, LDAP_BIND_PASSWORD)."""


@ldap_group.command("sync")
@json_option
@with_app()
def sync(as_json: bool) -> None:
    """Import and update directory accounts; disable those removed or disabled there (their
    sessions end and their tokens are revoked). Run it from cron."""
    try:
        report = service.sync()
    except (DirectoryUnavailable, service.SyncRefused) as exc:
        db.session.rollback()
        emit(as_json, {"error": "temporarily_unavailable"
                       if isinstance(exc, DirectoryUnavailable) else "refused",
                       "error_description": str(exc)}, f"error: {exc}")
        sys.exit(1)
    db.session.commit()
    data = report.as_dict()
    emit(as_json, data, "\n".join(f"{k}\t{v}" for k, v in data.items() if k != "problems"))
