"""`idp users`: accounts, and their sessions."""

from __future__ import annotations

import sys

import click

from idp.accounts import lockout, reset
from idp.accounts.service import AccountError, create_user
from idp.accounts.settings import set_disabled, sign_out_everywhere
from idp.audit import service as audit
from idp.cli.common import account, emit, json_option, with_app
from idp.cli.mfa import reset_mfa
from idp.extensions import db as sqla


@click.group("users")
def users_group() -> None:
    """Accounts."""


@users_group.command("create")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option("--role", required=True)
@click.option("--npi", default=None)
@click.option("--password", default=None, help="omit to be prompted (never echoed)")
@click.option("--temporary", is_flag=True, help="must be changed at first sign-in")
@click.option("--given-name", default="")
@click.option("--family-name", default="")
@click.option("--facility", default=None)
@click.option("--department", default=None)
@click.option("--license-state", default=None)
@json_option
@with_app()
def users_create(username: str, email: str, role: str, npi: str | None, password: str | None,
                 temporary: bool, given_name: str, family_name: str, facility: str | None,
                 department: str | None, license_state: str | None, as_json: bool) -> None:
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = create_user(username=username, email=email, role=role, npi=npi,
                           password=password, temporary=temporary, given_name=given_name,
                           family_name=family_name, facility=facility, department=department,
                           license_state=license_state)
    except AccountError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    audit.record("user.created", user_id=user.id, actor="cli", role=role)
    sqla.session.commit()
    emit(as_json, {"username": user.username, "sub": user.subject, "role": user.role},
         f"created {user.username} (sub {user.subject})")


@users_group.command("unlock")
@click.argument("login")
@json_option
@with_app()
def users_unlock(login: str, as_json: bool) -> None:
    """Clear the failed sign-in count and any lock."""
    user = account(login)
    lockout.unlock(user)
    audit.record("user.unlocked", user_id=user.id, actor="cli")
    sqla.session.commit()
    emit(as_json, {"username": user.username, "locked": False}, f"unlocked {user.username}")


def _set_disabled(login: str, disabled: bool, as_json: bool) -> None:
    user = account(login)
    ended = set_disabled(user, disabled, actor="cli")
    sqla.session.commit()
    state = "disabled" if disabled else "enabled"
    emit(as_json, {"username": user.username, "disabled": disabled, "sessions_ended": ended},
         f"{state} {user.username}" + (f"; {ended} session(s) ended" if disabled else ""))


@users_group.command("disable")
@click.argument("login")
@json_option
@with_app()
def users_disable(login: str, as_json: bool) -> None:
    """No sign-in; every session ends, every token and reset link is revoked."""
    _set_disabled(login, True, as_json)


@users_group.command("enable")
@click.argument("login")
@json_option
@with_app()
def users_enable(login: str, as_json: bool) -> None:
    """Allow sign-in again."""
    _set_disabled(login, False, as_json)


@users_group.command("reset-password")
@click.argument("login")
@click.option("--temporary", is_flag=True,
              help="set a random temporary password, printed once, changed at first sign-in")
@json_option
@with_app()
def users_reset_password(login: str, temporary: bool, as_json: bool) -> None:
    """Email a reset link to the account's address, or set a temporary password."""
    user = account(login)
    if user.disabled:
        click.echo(f"error: {user.username} is disabled; enable it first", err=True)
        sys.exit(2)
    if temporary:
        password = reset.set_temporary(user, actor="cli")
        sqla.session.commit()
        emit(as_json, {"username": user.username, "temporary_password": password,
                       "expires_at": user.temporary_password_expires_at},
             f"temporary password for {user.username}: {password}\n(shown once; it must be "
             f"changed at first sign-in and expires "
             f"{user.temporary_password_expires_at:%Y-%m-%d %H:%M} UTC)")
        return
    link = reset.issue_link(user)
    audit.record("password.reset_link_sent", user_id=user.id, actor="cli")
    sqla.session.commit()
    sent = reset.send_link(link, helpdesk=True)
    emit(as_json, {"username": user.username, "emailed": sent, "email": user.email},
         f"reset link emailed to {user.email}" if sent else "")
    if not sent:
        click.echo("error: the mail server did not accept the reset email; it is queued and "
                   "retried by `idp notify deliver` (a new link would replace it)", err=True)
        sys.exit(1)


@users_group.group("sessions")
def users_sessions() -> None:
    """An account's SSO sessions."""


@users_sessions.command("end")
@click.argument("login")
@json_option
@with_app()
def users_sessions_end(login: str, as_json: bool) -> None:
    """End every session of the account and revoke its tokens."""
    user = account(login)
    ended = sign_out_everywhere(user, "helpdesk", actor="cli")
    sqla.session.commit()
    emit(as_json, {"username": user.username, "sessions_ended": ended},
         f"ended {ended} session(s) of {user.username}")


@users_group.command("reset-mfa")
@click.argument("login")
@json_option
@with_app()
def usersreset_mfa(login: str, as_json: bool) -> None:
    """Same as `idp mfa reset` (design.md names it here)."""
    reset_mfa(login, as_json)
