"""The `idp` command: operators' CLI. Every subcommand takes --json."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from idp.config import ConfigError, Settings
from idp.policy import PolicyError


def _app(ensure_keys: bool = True) -> Any:
    from idp import create_app

    try:
        return create_app(Settings.from_env(), ensure_keys=ensure_keys)
    except (ConfigError, PolicyError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def emit(as_json: bool, data: Any, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def json_option(func: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output")(func)


def with_app(ensure_keys: bool = True) -> Callable:
    def decorator(func: Callable) -> Callable:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            app = _app(ensure_keys)
            with app.app_context():
                result = func(*args, **kwargs)
                _deliver_logout_tokens()
                return result
        return wrapper
    return decorator


def _deliver_logout_tokens() -> None:
    """Sessions the command ended (and committed): their back-channel logout tokens now."""
    from idp.oidc.backchannel import deliver_pending

    deliver_pending()


@click.group()
def main() -> None:
    """Healthcare identity provider: operators' commands."""


# -- db ------------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@json_option
@with_app(ensure_keys=False)
def db_upgrade(as_json: bool) -> None:
    """Apply every migration (safe to run again)."""
    from flask_migrate import upgrade

    from idp.extensions import db as sqla

    upgrade(revision="heads")  # every branch, should parallel work leave more than one
    with sqla.engine.connect() as conn:
        from alembic.runtime.migration import MigrationContext

        heads = sorted(MigrationContext.configure(conn).get_current_heads())
    head = ",".join(heads)
    emit(as_json, {"revision": head}, f"database at revision {head}")


# -- keys ----------------------------------------------------------------------------------
@main.group()
def keys() -> None:
    """Signing keys."""


@keys.command("list")
@json_option
@with_app()
def keys_list(as_json: bool) -> None:
    from idp.context import keystore

    rows = [s.__dict__ for s in keystore().statuses()]
    lines = [f"{r['kid']}  {r['alg']}  {r['state']:8}  active_at={r['active_at']:%Y-%m-%d %H:%M}"
             + (f"  unpublish_at={r['unpublish_at']:%Y-%m-%d %H:%M}" if r["unpublish_at"]
                else "") for r in rows]
    emit(as_json, rows, "\n".join(lines))


@keys.command("rotate")
@click.option("--delay", type=click.IntRange(0, 30 * 86400), default=None,
              help="seconds before the new key signs (default: policies/keys.toml)")
@click.option("--alg", "algs", multiple=True, type=click.Choice(["RS256", "ES256"]))
@json_option
@with_app()
def keys_rotate(delay: int | None, algs: tuple[str, ...], as_json: bool) -> None:
    """Publish new keys now; they sign after the delay; old keys stay until tokens expire."""
    from idp.context import keystore, policy

    delay = policy().keys.activation_delay if delay is None else delay
    created = keystore().rotate(delay, algs or None)
    emit(as_json, {"created": created, "delay": delay},
         f"published {', '.join(created)}; signing in {delay} s")


# -- clients -------------------------------------------------------------------------------
@main.group()
def clients() -> None:
    """OIDC relying parties."""


@clients.command("create")
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option("--public", is_flag=True, help="no secret (native or browser app); PKCE required")
@click.option("--grant-type", "grant_types", multiple=True)
@click.option("--scope", default=None, help='space-separated, one argument: "openid profile"')
@click.option("--post-logout-redirect-uri", "logout_uris", multiple=True)
@click.option("--backchannel-logout-uri", default=None)
@click.option("--first-party", is_flag=True, help="skip the consent page")
@click.option("--auth-method", type=click.Choice(
    ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]), default=None)
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="public JWK set for private_key_jwt")
@click.option("--loopback-any-port", is_flag=True, help="RFC 8252 native-app redirect rule")
@click.option("--require-pkce", is_flag=True, help="require PKCE from a confidential client")
@click.option("--id-token-alg", type=click.Choice(["RS256", "ES256"]), default=None)
@click.option("--introspect-any", is_flag=True, help="resource server: may introspect any token")
@click.option("--client-id", default=None, help="choose the client_id (default: random)")
@click.option("--access-token-lifetime", type=int, default=None,
              help="seconds (default and maximum: policies/tokens.toml)")
@click.option("--id-token-lifetime", type=int, default=None, help="seconds")
@click.option("--refresh-token-lifetime", type=int, default=None, help="seconds")
@json_option
@with_app()
def clients_create(name: str, redirect_uris: tuple[str, ...], public: bool,
                   grant_types: tuple[str, ...], scope: str | None, logout_uris: tuple[str, ...],
                   backchannel_logout_uri: str | None, first_party: bool,
                   auth_method: str | None, jwks_file: str | None, loopback_any_port: bool,
                   require_pkce: bool, id_token_alg: str | None, introspect_any: bool,
                   client_id: str | None, access_token_lifetime: int | None,
                   id_token_lifetime: int | None, refresh_token_lifetime: int | None,
                   as_json: bool) -> None:
    """Register a client; prints client_id, and client_secret once."""
    from idp.extensions import db as sqla
    from idp.oidc.clients import ClientError, Lifetimes, create_client

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
                access_token_lifetime, id_token_lifetime, refresh_token_lifetime))
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



@clients.command("issue-registration-token")
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
    from idp.admin.service import issue_initial_token
    from idp.extensions import db as sqla

    issued = issue_initial_token(actor="cli", lifetime=expires_in, uses=uses, note=note)
    sqla.session.commit()
    emit(as_json, {"initial_access_token": issued.token, "expires_at": issued.expires_at,
                   "uses": issued.uses},
         f"initial access token: {issued.token}  (shown once)\nvalid until "
         f"{issued.expires_at:%Y-%m-%d %H:%M} UTC for {issued.uses} registration(s)")

# -- users ---------------------------------------------------------------------------------
@main.group()
def users() -> None:
    """Accounts."""


@users.command("create")
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
    from idp.accounts.service import AccountError, create_user
    from idp.audit import service as audit
    from idp.extensions import db as sqla

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


def _account(login: str) -> Any:
    """The account a username or NPI names; exit 2 with one line when there is none."""
    from idp.accounts.service import find_by_login

    user = find_by_login(login)
    if user is None:
        click.echo(f"error: no account with username or NPI {login!r}", err=True)
        sys.exit(2)
    return user


@users.command("unlock")
@click.argument("login")
@json_option
@with_app()
def users_unlock(login: str, as_json: bool) -> None:
    """Clear the failed sign-in count and any lock."""
    from idp.accounts import lockout
    from idp.audit import service as audit
    from idp.extensions import db as sqla

    user = _account(login)
    lockout.unlock(user)
    audit.record("user.unlocked", user_id=user.id, actor="cli")
    sqla.session.commit()
    emit(as_json, {"username": user.username, "locked": False}, f"unlocked {user.username}")


def _set_disabled(login: str, disabled: bool, as_json: bool) -> None:
    from idp.accounts.settings import set_disabled
    from idp.extensions import db as sqla

    user = _account(login)
    ended = set_disabled(user, disabled, actor="cli")
    sqla.session.commit()
    state = "disabled" if disabled else "enabled"
    emit(as_json, {"username": user.username, "disabled": disabled, "sessions_ended": ended},
         f"{state} {user.username}" + (f"; {ended} session(s) ended" if disabled else ""))


@users.command("disable")
@click.argument("login")
@json_option
@with_app()
def users_disable(login: str, as_json: bool) -> None:
    """No sign-in; every session ends, every token and reset link is revoked."""
    _set_disabled(login, True, as_json)


@users.command("enable")
@click.argument("login")
@json_option
@with_app()
def users_enable(login: str, as_json: bool) -> None:
    """Allow sign-in again."""
    _set_disabled(login, False, as_json)


@users.command("reset-password")
@click.argument("login")
@click.option("--temporary", is_flag=True,
              help="set a random temporary password, printed once, changed at first sign-in")
@json_option
@with_app()
def users_reset_password(login: str, temporary: bool, as_json: bool) -> None:
    """Email a reset link to the account's address, or set a temporary password."""
    from idp.accounts import reset
    from idp.audit import service as audit
    from idp.extensions import db as sqla

    user = _account(login)
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


@users.group("sessions")
def users_sessions() -> None:
    """An account's SSO sessions."""


@users_sessions.command("end")
@click.argument("login")
@json_option
@with_app()
def users_sessions_end(login: str, as_json: bool) -> None:
    """End every session of the account and revoke its tokens."""
    from idp.accounts.settings import sign_out_everywhere
    from idp.extensions import db as sqla

    user = _account(login)
    ended = sign_out_everywhere(user, "helpdesk", actor="cli")
    sqla.session.commit()
    emit(as_json, {"username": user.username, "sessions_ended": ended},
         f"ended {ended} session(s) of {user.username}")


# -- audit ---------------------------------------------------------------------------------
@main.group()
def audit() -> None:
    """Audit trail."""


@audit.command("verify")
@click.option("--anchor", "anchor_file", type=click.Path(dir_okay=False), default=None,
              help="also check an anchor written by `idp audit anchor` (JSON)")
@json_option
@with_app(ensure_keys=False)
def audit_verify(anchor_file: str | None, as_json: bool) -> None:
    """Check the hash chain; exit 1 on a break (or when the anchored event changed)."""
    from idp.audit.service import check_anchor, verify

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
    intact, count, broken = verify()
    if kept is not None:
        problem = check_anchor(kept)
    text = (f"audit chain intact ({count} events)" if intact
            else f"audit chain BROKEN at event {broken}")
    if kept is not None:
        text += "\n" + (f"anchor event {kept.get('seq')} matches" if problem is None
                        else f"anchor MISMATCH: {problem}")
    data = {"intact": intact, "events": count, "first_broken_seq": broken}
    if kept is not None:
        data["anchor"] = {"seq": kept.get("seq"), "matches": problem is None,
                          "problem": problem}
    emit(as_json, data, text)
    sys.exit(0 if intact and problem is None else 1)


@audit.command("anchor")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="also write the anchor (JSON) to this file")
@json_option
@with_app(ensure_keys=False)
def audit_anchor(output: str | None, as_json: bool) -> None:
    """Print the latest event's seq, hash and time, to store outside the database; later
    `idp audit verify --anchor FILE` proves that event and everything before it unchanged."""
    from idp.audit.service import anchor

    found = anchor()
    if found is None:
        click.echo("error: the audit trail is empty", err=True)
        sys.exit(1)
    if output:
        with open(output, "w") as handle:
            json.dump(found, handle)
            handle.write("\n")
    emit(as_json, found, f"seq {found['seq']}  hash {found['hash']}  at {found['at']}")


@audit.command("grants")
@click.option("--role", required=True, help="the application's database role")
@click.option("--schema", default="public", show_default=True)
def audit_grants(role: str, schema: str) -> None:
    """Print the PostgreSQL grants that make the audit trail INSERT-only for the role."""
    from idp.audit.grants import statements

    try:
        click.echo(";\n".join(statements(role, schema)) + ";")
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


# -- serve ---------------------------------------------------------------------------------
# -- mfa -----------------------------------------------------------------------------------
@main.group()
def mfa() -> None:
    """Second factors."""


@mfa.command("enroll-totp")
@click.argument("login")
@json_option
@with_app()
def mfa_enroll_totp(login: str, as_json: bool) -> None:
    """Enroll an authenticator app for an account; prints its secret (operators, tests)."""
    from idp import clock
    from idp.accounts.service import find_by_login
    from idp.audit import service as audit
    from idp.extensions import db as sqla
    from idp.mfa import crypto, totp
    from idp.mfa.models import Factor

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


@mfa.command("reset")
@click.argument("login")
@json_option
@with_app()
def mfa_reset(login: str, as_json: bool) -> None:
    """Remove every factor and recovery code: the next sign-in enrolls again."""
    _reset_mfa(login, as_json)


def _reset_mfa(login: str, as_json: bool) -> None:
    from idp.accounts.service import find_by_login
    from idp.extensions import db as sqla
    from idp.mfa.manage import reset

    user = find_by_login(login)
    if user is None:
        click.echo(f"error: no account {login!r}", err=True)
        sys.exit(2)
    removed = reset(user, actor="cli")
    sqla.session.commit()
    emit(as_json, {"username": user.username, "factors_removed": removed},
         f"removed {removed} factor(s) of {user.username}; the next sign-in enrolls again")


@users.command("reset-mfa")
@click.argument("login")
@json_option
@with_app()
def users_reset_mfa(login: str, as_json: bool) -> None:
    """Same as `idp mfa reset` (design.md names it here)."""
    _reset_mfa(login, as_json)


# Each granian worker accepts at most this many connections at once (granian's --backpressure
# gates connections, an idle keep-alive one included, not requests in flight): the bound of
# gunicorn's gthread worker (its default --worker-connections). Requests beyond --threads wait
# for a thread of idp.asgi's pool inside the worker, their bodies already read.
GRANIAN_CONNECTIONS = 1000


@main.command("serve")
@click.option("--server", type=click.Choice(["gunicorn", "granian"]), default="granian",
              envvar="IDP_SERVER", show_envvar=True, show_default=True,
              help="granian: reads each request, body included, before a Python thread is "
                   "given it, so clients that trickle their request cannot stall the service; "
                   "gunicorn: per-request timeouts, but its threads wait on slow clients "
                   "(README, Operations, Serving)")
@click.option("--bind", default="127.0.0.1:8000", show_default=True,
              help="HOST:PORT ([V6]:PORT for IPv6), or unix:PATH")
@click.option("--workers", type=click.IntRange(1, 64), default=2, envvar="IDP_WORKERS",
              show_envvar=True, help="worker processes (one per core)")
@click.option("--threads", type=click.IntRange(1, 64), default=4, envvar="IDP_THREADS",
              show_envvar=True,
              help="threads per worker that run requests (idp.asgi's pool under granian; "
                   "gunicorn gthread)")
@click.option("--worker-class", type=click.Choice(["sync", "gthread"]), default="gthread",
              show_default=True,
              help="gunicorn only: gthread keeps connections alive (see README, Performance); "
                   "sync serves one request at a time per worker and ignores --threads")
@click.option("--graceful-timeout", type=click.IntRange(1, 600), default=20,
              envvar="IDP_GRACEFUL_TIMEOUT", show_envvar=True, show_default=True,
              help="seconds a worker has to finish its requests on SIGTERM or SIGHUP before "
                   "it is killed")
@json_option
@click.pass_context
def serve(ctx: click.Context, server: str, bind: str, workers: int, threads: int,
          worker_class: str, graceful_timeout: int, as_json: bool) -> None:
    """Run the IdP under granian (default) or gunicorn. SIGHUP to this process (it becomes
    the server's master) replaces the workers gracefully; SIGTERM stops."""
    import os

    if server == "granian":
        if ctx.get_parameter_source("worker_class") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--worker-class is a gunicorn option: add --server gunicorn")
        address = _granian_bind(bind)
    elif worker_class == "sync":
        threads = 1  # gunicorn would silently switch a sync worker with threads to gthread
    app = _app()  # validate configuration and create keys once, before forking workers
    _prepare_metrics(app)
    # Structured logs by default in production; the app writes one line per request, so the
    # server's own access log is off (it would be a second, less informative line).
    log_format = os.environ.get("IDP_LOG_FORMAT") or "json"
    if as_json:
        click.echo(json.dumps({"server": server, "bind": bind, "workers": workers,
                               "threads": threads,
                               "worker_class": worker_class if server == "gunicorn" else None,
                               "graceful_timeout": graceful_timeout}))
    if server == "granian":
        # granian's ASGI interface on idp.asgi: each request's body is read in the event loop
        # (bounded by web.toml's max_body_bytes and body_read_timeout_seconds) before one of
        # the --threads threads runs the WSGI application, so slow clients hold no thread
        # (idp.web.asgi_bridge; granian's WSGI interface hands a thread the request before its
        # body has arrived). No per-request timeout exists (README, Operations); the header
        # read timeout (30 s, granian's default) bounds slow headers and idle keep-alive
        # connections. Without a kill timeout granian's master waits for ever for a worker
        # that does not stop (2.8.7 now and then leaves one hanging after SIGTERM).
        os.execvpe(sys.executable, [sys.executable, "-m", "granian", "--interface", "asgi",
                                    *address, "--workers", str(workers), "--no-ws",
                                    "--backpressure", str(GRANIAN_CONNECTIONS),
                                    "--workers-kill-timeout", str(graceful_timeout),
                                    "--respawn-failed-workers",
                                    "--no-access-log", "--log-level", "warning",
                                    "idp.asgi:app"],
                   {**os.environ, "IDP_LOG_FORMAT": log_format, "IDP_THREADS": str(threads)})
        return  # only when execvpe is stubbed (tests)
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "--bind", bind,
                               "--workers", str(workers), "--threads", str(threads),
                               "--worker-class", worker_class,
                               "--timeout", "30", "--graceful-timeout", str(graceful_timeout),
                               "--no-control-socket",
                               "--logger-class", "idp.web.access_log.RedactingLogger",
                               "--config", "python:idp.web.gunicorn_hooks",
                               "--env", f"IDP_LOG_FORMAT={log_format}",
                               "idp.wsgi:app"])


def _granian_bind(bind: str) -> list[str]:
    """gunicorn's --bind forms as granian options: HOST:PORT, [V6]:PORT, HOST (port 8000),
    unix:PATH."""
    if bind.startswith("unix:"):
        if not bind[5:]:
            raise click.BadParameter("unix: needs a path", param_hint="--bind")
        return ["--uds", bind[5:]]
    if bind.startswith("["):
        host, _, rest = bind[1:].partition("]")
        port = rest.removeprefix(":") if rest else "8000"
        if rest and not rest.startswith(":"):
            raise click.BadParameter(f"{bind!r} is not [HOST]:PORT", param_hint="--bind")
    elif bind.count(":") > 1:
        raise click.BadParameter(f"{bind!r}: write an IPv6 address as [ADDRESS]:PORT",
                                 param_hint="--bind")
    else:
        host, _, port = bind.partition(":")
        port = port or "8000"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{bind!r} is not HOST:PORT", param_hint="--bind")
    return ["--host", host, "--port", port]


def _prepare_metrics(app: Any) -> None:
    """With IDP_METRICS_TOKEN, the workers (granian's or gunicorn's, processes either way)
    share samples through prometheus-client's multiprocess mode: an emptied directory under
    the instance directory, unless the operator chose one (PROMETHEUS_MULTIPROC_DIR). The
    server inherits the variable through exec."""
    import os
    import shutil

    settings = app.extensions["idp"].settings
    if settings.metrics_token is None or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = settings.instance_dir / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
# -- sessions ------------------------------------------------------------------------------
@main.group("sessions")
def sessions_group() -> None:
    """SSO sessions and their back-channel logout (cron jobs)."""


@sessions_group.command("deliver")
@click.option("--limit", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="at most this many attempts in this run")
@json_option
@with_app()
def sessions_deliver(limit: int, as_json: bool) -> None:
    """Send the back-channel logout tokens that are due (new ones, and retries whose back-off
    has passed). For cron, every minute."""
    from idp.oidc.backchannel import deliver_due

    report = deliver_due(limit=limit)
    emit(as_json, report.as_dict(),
         f"{report.attempted} attempted, {report.delivered} delivered, {report.failed} failed "
         f"({report.abandoned} abandoned); {report.pending} still owed")


@sessions_group.command("expire")
@json_option
@with_app()
def sessions_expire(as_json: bool) -> None:
    """End the sessions past their idle or absolute timeout and send their relying parties
    logout tokens. For cron, every minute."""
    from idp.extensions import db as sqla
    from idp.oidc.backchannel import deliver_pending
    from idp.sessions.service import expire

    ended = expire()
    sqla.session.commit()
    report = deliver_pending()
    data = {"ended": {reason: len(sids) for reason, sids in ended.items()},
            "backchannel": report.as_dict() if report else None}
    text = ", ".join(f"{len(sids)} {reason}" for reason, sids in ended.items())
    if report:
        text += (f"; logout tokens: {report.delivered} delivered, {report.failed} failed, "
                 f"{report.pending} still owed")
    emit(as_json, data, f"sessions ended: {text}")


from idp.demo import demo  # noqa: E402

main.add_command(demo)


# -- onboarding ----------------------------------------------------------------------------
@main.group()
def onboarding() -> None:
    """Provider onboarding."""


@onboarding.command("check-licenses")
@json_option
@with_app(ensure_keys=False)
def onboarding_check_licenses(as_json: bool) -> None:
    """Warn clinicians by email before their license expires (once, policies/onboarding.toml
    license_warning_days) and suspend the clinical role of expired licenses. For cron, daily."""
    from idp.extensions import db as sqla
    from idp.notify.mailer import send_mail
    from idp.onboarding import service

    run = service.check_licenses()
    sqla.session.commit()
    warned = [(u.username, send_mail(*service.warning_mail(u))) for u in run.warned]
    suspended = [(u.username, send_mail(*service.suspended_mail(u))) for u in run.suspended]
    data = {"warned": [name for name, _ in warned],
            "suspended": [name for name, _ in suspended],
            "mail_failed": [name for name, sent in warned + suspended if not sent]}
    emit(as_json, data, f"{len(warned)} warned, {len(suspended)} clinical roles suspended"
         + (f"; {len(data['mail_failed'])} emails failed" if data["mail_failed"] else ""))


@onboarding.command("renew-license")
@click.argument("login")
@click.option("--expires", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="the renewed license's expiry date, YYYY-MM-DD")
@click.option("--number", default=None, help="the license number, when it changed")
@json_option
@with_app(ensure_keys=False)
def onboarding_renew_license(login: str, expires: Any, number: str | None,
                             as_json: bool) -> None:
    """Record a renewed license: lifts the clinical suspension of an expired one."""
    from idp.extensions import db as sqla
    from idp.onboarding import service

    user = _account(login)
    try:
        service.renew_license(user, expires.date(), number, "cli")
    except service.OnboardingError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sqla.session.commit()
    emit(as_json, {"username": user.username, "license_expires": expires.date().isoformat(),
                   "clinical_suspended": user.clinical_suspended},
         f"{user.username}: license valid until {expires.date().isoformat()}")
from idp.reports.cli import reports  # noqa: E402

main.add_command(reports)
from idp.notify.cli import notify  # noqa: E402

main.add_command(notify)

from idp.ops.cli import backup_command, restore_command  # noqa: E402

main.add_command(backup_command)
main.add_command(restore_command)
