"""`idp mfa`: second factors."""

from __future__ import annotations

import sys

import click

from idp import clock
from idp.accounts.service import find_by_login
from idp.audit import service as audit
from idp.cli.common import emit, json_option, with_app
from idp.core import crypto
from idp.extensions import db as sqla
from idp.mfa.factors import totp
from idp.mfa.manage import reset
from idp.mfa.models import Factor


@click.group("mfa")
def mfa_group() -> None:
    """Second factors."""


@mfa_group.command("enroll-totp")
@click.argument("login")
@json_option
@with_app()
def mfa_enroll_totp(login: str, as_json: bool) -> None:
    """Enroll an authenticator app for an account; prints its secret (operators, tests)."""
    user = find_by_login(login)
    if user is None:
        click.echo(f"error: no account {login!r}", err=True)
        sys.exit(2)
    secret = totp.new_secret()
    sqla.session.add(Factor(user_id=user.id, kind="totp", label="Authenticator app",
                            created_at=clock.now(), confirmed_at=clock.now(),
                            secret_encrypted=crypto.encrypt(secret)))
    audit.record("mfa.enrolled", user_id=user.id, actor="cli", factor="totp")
    sqla.session.commit()
    uri = totp.provisioning_uri(user, secret)
    emit(as_json, {"username": user.username, "secret": secret, "uri": uri},
         f"secret: {secret}\nuri: {uri}")


@mfa_group.command("reset")
@click.argument("login")
@json_option
@with_app()
def mfa_reset(login: str, as_json: bool) -> None:
    """Remove every factor and recovery code: the next sign-in enrolls again."""
    reset_mfa(login, as_json)


def reset_mfa(login: str, as_json: bool) -> None:
    """`idp mfa reset` and `idp users reset-mfa`."""
    user = find_by_login(login)
    if user is None:
        click.echo(f"error: no account {login!r}", err=True)
        sys.exit(2)
    removed = reset(user, actor="cli")
    sqla.session.commit()
    emit(as_json, {"username": user.username, "factors_removed": removed},
         f"removed {removed} factor(s) of {user.username}; the next sign-in enrolls again")
