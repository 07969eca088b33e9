"""`idp demo seed`: the demo relying parties and accounts (the seeding is idp/demo.py)."""

from __future__ import annotations

import click
from sqlalchemy.exc import SQLAlchemyError

from idp.accounts.service import AccountError
from idp.cli.common import emit, json_option, with_app
from idp.demo import DEFAULT_EHR_URL, DEFAULT_PORTAL_URL, DEFAULT_SMART_APP_URL, SeedResult, seed
from idp.oidc.clients import ClientError


@click.group("demo")
def demo_group() -> None:
    """Demo relying parties and accounts for local development (never in production)."""


@demo_group.command("seed")
@click.option("--portal-url", envvar="PORTAL_URL", default=DEFAULT_PORTAL_URL, show_default=True,
              help="base URL of the provider portal (its redirect URIs derive from it)")
@click.option("--ehr-url", envvar="EHR_URL", default=DEFAULT_EHR_URL, show_default=True,
              help="base URL of the EHR")
@click.option("--smart-app-url", envvar="SMART_APP_URL", default=DEFAULT_SMART_APP_URL,
              show_default=True, help="base URL of the demo SMART app")
@json_option
def seed_command(portal_url: str, ehr_url: str, smart_app_url: str, as_json: bool) -> None:
    """Register the portal and EHR clients and the demo accounts; safe to run again."""
    @with_app()
    def run() -> SeedResult:
        return seed(portal_url=portal_url, ehr_url=ehr_url, smart_app_url=smart_app_url)

    try:
        result = run()
    except (ClientError, AccountError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except SQLAlchemyError as exc:
        click.echo(f"error: the database is not ready ({type(exc).__name__}); "
                   "run `idp db upgrade` first", err=True)
        raise SystemExit(2) from None
    emit(as_json, result.as_dict(), _text(result))


def _text(result: SeedResult) -> str:
    lines = ["Demo clients:"]
    lines += [f"  {c['client_id']:8} {c['name']:16} {c['status']:15} {c['redirect_uri']}"
              for c in result.clients]
    lines.append(f"  secrets saved in {result.clients_file} (mode 0600)")
    lines.append("Demo accounts (local demo credentials; add each authenticator key or "
                 "otpauth:// link to an authenticator app: every sign-in asks for its code):")
    for a in result.accounts:
        lines.append(f"  {a['username']:13} {a['role']:19} {a['password']}  ({a['status']})")
        lines.append(f"  {'':13} authenticator key {a['totp_secret']}  ({a['totp_status']})")
        lines.append(f"  {'':13} {a['totp_uri']}")
    lines.append(f"  passwords and authenticator keys saved in {result.accounts_file} "
                 "(mode 0600)")
    return "\n".join(lines)
