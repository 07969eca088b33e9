"""`idp scim`: provisioning (SCIM 2.0) tokens for HR connectors such as Entra ID and Okta."""

from __future__ import annotations

import sys

import click

from idp.cli.common import emit, json_option, with_app
from idp.extensions import db
from idp.scim import tokens


@click.group("scim")
def scim_group() -> None:
    """SCIM 2.0 provisioning (/scim/v2)."""


@scim_group.group("tokens")
def tokens_group() -> None:
    """Bearer tokens of provisioning connectors."""


@tokens_group.command("create")
@click.option("--name", required=True, help="the connector's name (audited on every write)")
@click.option("--expires-days", type=int, default=None,
              help="the token stops working after this many days (default: never)")
@json_option
@with_app()
def tokens_create(name: str, expires_days: int | None, as_json: bool) -> None:
    """Mint a token; it is printed once and stored only as a digest."""
    try:
        made = tokens.create(name, expires_days, actor="cli")
    except tokens.TokenError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    db.session.commit()
    expires = made.row.expires_at.isoformat() if made.row.expires_at else None
    emit(as_json, {"name": made.row.name, "token": made.token, "expires_at": expires},
         f"token for {made.row.name} (shown once, keep it in the connector's settings):\n"
         f"{made.token}")


@tokens_group.command("list")
@json_option
@with_app()
def tokens_list(as_json: bool) -> None:
    """Every token: name, state, dates (never the token)."""
    rows = [{"name": t.name, "state": tokens.state(t), "created_at": t.created_at.isoformat(),
             "expires_at": t.expires_at.isoformat() if t.expires_at else None,
             "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None}
            for t in tokens.listing()]
    emit(as_json, rows, "\n".join(f"{r['name']}\t{r['state']}\tlast used "
                                  f"{r['last_used_at'] or 'never'}" for r in rows)
         or "no tokens")


@tokens_group.command("revoke")
@click.argument("name")
@json_option
@with_app()
def tokens_revoke(name: str, as_json: bool) -> None:
    """Revoke the token of that name at once."""
    if not tokens.revoke(name, actor="cli"):
        click.echo(f"error: no live token named {name!r}", err=True)
        sys.exit(2)
    db.session.commit()
    emit(as_json, {"name": name, "revoked": True}, f"revoked {name}")
