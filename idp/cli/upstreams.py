"""`idp upstreams`: upstream OpenID Providers (Entra ID, Okta, any OIDC provider) whose users
sign in here (identity brokering)."""

from __future__ import annotations

import sys

import click

from idp.cli.common import emit, json_option, with_app
from idp.extensions import db
from idp.federation.upstream import service


def _row(row: service.Upstream) -> dict:
    return {"name": row.name, "issuer": row.issuer, "client_id": row.client_id,
            "scope": row.scope, "link_by": row.link_by,
            "allowed_domains": list(row.allowed_domains or []), "enabled": row.enabled,
            "client_secret": f"env:{row.secret_env}" if row.secret_env else "stored encrypted",
            "redirect_uri": service.redirect_uri(row),
            "backchannel_logout_uri": service.backchannel_logout_uri(row)}


@click.group("upstreams")
def upstreams_group() -> None:
    """Upstream OpenID Providers (identity brokering)."""


@upstreams_group.command("create")
@click.option("--name", required=True, help="short name: the button reads 'Sign in with NAME'")
@click.option("--issuer", required=True, help="the upstream's issuer URL (discovery is read)")
@click.option("--client-id", required=True, help="this IdP's client id at the upstream")
@click.option("--client-secret", default=None,
              help="this IdP's client secret there (stored encrypted)")
@click.option("--client-secret-env", default=None,
              help="or: the environment variable holding it (nothing stored)")
@click.option("--scope", default="openid profile email", show_default=True,
              help="space-separated, one argument")
@click.option("--link-by", type=click.Choice(service.LINK_BY), default="email",
              show_default=True, help="the claim policy may auto-link by (upstreams.toml)")
@click.option("--allowed-domain", "allowed_domains", multiple=True,
              help="domain whose verified addresses may be auto-linked (repeatable)")
@json_option
@with_app()
def create(name: str, issuer: str, client_id: str, client_secret: str | None,
           client_secret_env: str | None, scope: str, link_by: str,
           allowed_domains: tuple[str, ...], as_json: bool) -> None:
    """Register an upstream; prints the redirect URI to register there."""
    try:
        row = service.create(name=name, issuer=issuer, client_id=client_id,
                             client_secret=client_secret, secret_env=client_secret_env,
                             scope=scope, link_by=link_by, allowed_domains=allowed_domains,
                             actor="cli")
    except (service.ConfigError, service.outbound.OutboundRefused) as exc:
        click.echo(f"error: {getattr(exc, 'reason', exc)}", err=True)
        sys.exit(2)
    db.session.commit()
    data = _row(row)
    emit(as_json, data, f"upstream {row.name} registered.\nRegister this redirect URI at the "
         f"upstream: {data['redirect_uri']}\nand this back-channel logout URI: "
         f"{data['backchannel_logout_uri']}")


@upstreams_group.command("list")
@json_option
@with_app()
def list_(as_json: bool) -> None:
    """Every upstream (never a secret)."""
    rows = [_row(r) for r in service.listing()]
    emit(as_json, rows, "\n".join(f"{r['name']}\t{r['issuer']}\t"
                                  f"{'enabled' if r['enabled'] else 'disabled'}" for r in rows)
         or "no upstreams")


@upstreams_group.command("check")
@click.argument("name")
@json_option
@with_app()
def check(name: str, as_json: bool) -> None:
    """Fetch the upstream's discovery document and keys now."""
    row = service.by_name(name)
    if row is None:
        click.echo(f"error: no upstream named {name!r}", err=True)
        sys.exit(2)
    try:
        meta = service.metadata(row, force=True)
        found = service.keys(row, None)
    except service.UpstreamError as exc:
        click.echo(f"error: {exc.reason}", err=True)
        sys.exit(1)
    db.session.commit()
    emit(as_json, {"name": row.name, "issuer": meta["issuer"], "keys": len(found.keys),
                   "end_session_endpoint": meta.get("end_session_endpoint")},
         f"{row.name}: discovery and {len(found.keys)} key(s) read")


@upstreams_group.command("disable")
@click.argument("name")
@json_option
@with_app()
def disable(name: str, as_json: bool) -> None:
    """Hide the button and refuse sign-ins through this upstream."""
    row = service.by_name(name)
    if row is None:
        click.echo(f"error: no upstream named {name!r}", err=True)
        sys.exit(2)
    service.set_enabled(row, False, "cli")
    db.session.commit()
    emit(as_json, _row(row), f"{row.name} disabled")
