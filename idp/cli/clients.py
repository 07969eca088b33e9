"""`idp clients`: the OIDC relying parties."""

from __future__ import annotations

import json
import sys

import click
from sqlalchemy import select

from idp.admin import approval
from idp.admin.service import issue_initial_token
from idp.audit import service as audit
from idp.cli.common import emit, json_option, with_app
from idp.extensions import db as sqla
from idp.keys import jwt
from idp.oidc import client_profile
from idp.oidc.clients import AUTH_METHODS, ClientError, Lifetimes, create_client
from idp.oidc.models import Client


@click.group("clients")
def clients_group() -> None:
    """OIDC relying parties."""


@clients_group.command("create")
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option("--public", is_flag=True, help="no secret (native or browser app); PKCE required")
@click.option("--grant-type", "grant_types", multiple=True)
@click.option("--scope", default=None, help='space-separated, one argument: "openid profile"')
@click.option("--post-logout-redirect-uri", "logout_uris", multiple=True)
@click.option("--backchannel-logout-uri", default=None)
@click.option("--first-party", is_flag=True, help="skip the consent page")
@click.option("--auth-method", type=click.Choice(AUTH_METHODS), default=None)
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="public JWK set for private_key_jwt")
@click.option("--loopback-any-port", is_flag=True, help="RFC 8252 native-app redirect rule")
@click.option("--require-pkce", is_flag=True, help="require PKCE from a confidential client")
@click.option("--id-token-alg", type=click.Choice(jwt.ALGORITHMS), default=None)
@click.option("--introspect-any", is_flag=True, help="resource server: may introspect any token")
@click.option("--client-id", default=None, help="choose the client_id (default: random)")
@click.option("--access-token-lifetime", type=int, default=None,
              help="seconds (default and maximum: policies/tokens.toml)")
@click.option("--id-token-lifetime", type=int, default=None, help="seconds")
@click.option("--refresh-token-lifetime", type=int, default=None, help="seconds")
@click.option("--profile", default=None,
              help="client profile of policies/fapi.toml it is held to (fapi2: FAPI 2.0)")
@click.option("--require-par", is_flag=True,
              help="only pushed authorization requests (RFC 9126)")
@click.option("--dpop", "dpop_bound", is_flag=True,
              help="DPoP-bound access tokens only (RFC 9449 dpop_bound_access_tokens)")
@json_option
@with_app()
def clients_create(name: str, redirect_uris: tuple[str, ...], public: bool,
                   grant_types: tuple[str, ...], scope: str | None, logout_uris: tuple[str, ...],
                   backchannel_logout_uri: str | None, first_party: bool,
                   auth_method: str | None, jwks_file: str | None, loopback_any_port: bool,
                   require_pkce: bool, id_token_alg: str | None, introspect_any: bool,
                   client_id: str | None, access_token_lifetime: int | None,
                   id_token_lifetime: int | None, refresh_token_lifetime: int | None,
                   profile: str | None, require_par: bool, dpop_bound: bool,
                   as_json: bool) -> None:
    """Register a client; prints client_id, and client_secret once."""
    jwks = None
    if jwks_file:
        with open(jwks_file) as handle:
            jwks = json.load(handle)
    try:
        new = create_client(
            name=name, redirect_uris=list(redirect_uris), public=public,
            grant_types=list(grant_types) or None, scope=scope,
            post_logout_redirect_uris=list(logout_uris),
            backchannel_logout_uri=backchannel_logout_uri, first_party=first_party,
            auth_method=auth_method, jwks=jwks, loopback_any_port=loopback_any_port,
            id_token_alg=id_token_alg, introspect_any=introspect_any, client_id=client_id,
            require_pkce=require_pkce, lifetimes=Lifetimes(
                access_token_lifetime, id_token_lifetime, refresh_token_lifetime),
            profile=profile, require_par=require_par, dpop_bound=dpop_bound)
    except ClientError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sqla.session.commit()
    data = {"client_id": new.client.client_id, "client_secret": new.client_secret,
            "token_endpoint_auth_method": new.client.token_endpoint_auth_method}
    text = f"client_id: {new.client.client_id}"
    if new.client_secret:
        text += f"\nclient_secret: {new.client_secret}  (shown once; store it now)"
    emit(as_json, data, text)


@clients_group.command("issue-registration-token")
@click.option("--expires-in", "expires_in", type=click.IntRange(60, 30 * 86400), default=86400,
              show_default=True, help="seconds the token stays valid")
@click.option("--uses", type=click.IntRange(1, 100), default=1, show_default=True,
              help="registrations it allows")
@click.option("--note", default=None, help="who it is for (kept with the token)")
@json_option
@with_app()
def clients_issue_registration_token(expires_in: int, uses: int, note: str | None,
                                     as_json: bool) -> None:
    """An initial access token for dynamic registration at /register (RFC 7591), printed
    once and stored hashed."""
    issued = issue_initial_token(actor="cli", lifetime=expires_in, uses=uses, note=note)
    sqla.session.commit()
    emit(as_json, {"initial_access_token": issued.token, "expires_at": issued.expires_at,
                   "uses": issued.uses},
         f"initial access token: {issued.token}  (shown once)\nvalid until "
         f"{issued.expires_at:%Y-%m-%d %H:%M} UTC for {issued.uses} registration(s)")


@clients_group.command("approve")
@click.argument("client_id")
@click.option("--reject", is_flag=True, help="refuse the pending request instead")
@json_option
@with_app()
def clients_approve(client_id: str, reject: bool, as_json: bool) -> None:
    """Grant (or, with --reject, refuse) what a self-registered client's pending request asks
    for: scopes, grant types, introspect-any. Audited as the console's buttons are."""
    client = sqla.session.execute(select(Client).where(Client.client_id == client_id[:64])
                                  ).scalar_one_or_none()
    if client is None:
        click.echo(f"error: no client {client_id!r}", err=True)
        sys.exit(2)
    decide = approval.reject if reject else approval.approve
    try:
        what = decide(client, actor="cli")
    except approval.NothingPending as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sqla.session.commit()
    verb = "rejected" if reject else "approved"
    emit(as_json, {"client_id": client.client_id, "decision": verb, **what,
                   "scope_granted": client.scope, "grant_types_granted": client.grant_types},
         f"{verb} for {client.client_id}: scope {what['scope'] or '-'}, grant types "
         f"{' '.join(what['grant_types']) or '-'}"
         f"{', introspect-any' if what['introspect_any'] else ''}")


@clients_group.command("update")
@click.argument("client_id")
@click.option("--profile", default=None,
              help="client profile of policies/fapi.toml (fapi2); 'none' removes it")
@click.option("--require-par/--no-require-par", default=None,
              help="only pushed authorization requests (RFC 9126)")
@click.option("--dpop/--no-dpop", "dpop_bound", default=None,
              help="DPoP-bound access tokens only (RFC 9449)")
@json_option
@with_app()
def clients_update(client_id: str, profile: str | None, require_par: bool | None,
                   dpop_bound: bool | None, as_json: bool) -> None:
    """Change a client's protocol options: its profile, PAR and DPoP requirements. Options
    not given keep their value; a profile turns on what it requires."""
    client = sqla.session.execute(select(Client).where(Client.client_id == client_id[:64])
                                  ).scalar_one_or_none()
    if client is None:
        click.echo(f"error: no client {client_id!r}", err=True)
        sys.exit(2)
    chosen = client.profile if profile is None else (None if profile == "none" else profile)
    try:
        client_profile.apply(
            client, profile=chosen,
            require_par=client.require_pushed_authorization_requests
            if require_par is None else require_par,
            dpop_bound=client.dpop_bound_access_tokens if dpop_bound is None else dpop_bound)
    except client_profile.ProfileError as exc:
        sqla.session.rollback()
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    audit.record("client.updated", client_id=client.client_id, actor="cli",
                 profile=client.profile, require_par=client.require_pushed_authorization_requests,
                 dpop_bound=client.dpop_bound_access_tokens)
    sqla.session.commit()
    data = {"client_id": client.client_id, "profile": client.profile,
            "require_pushed_authorization_requests": client.require_pushed_authorization_requests,
            "dpop_bound_access_tokens": client.dpop_bound_access_tokens}
    emit(as_json, data, f"{client.client_id}: profile {client.profile or '-'}, PAR required "
         f"{client.require_pushed_authorization_requests}, DPoP required "
         f"{client.dpop_bound_access_tokens}")
