"""`idp onboarding`: provider onboarding (license checks)."""

from __future__ import annotations

import sys
from typing import Any

import click

from idp.cli.common import account, emit, json_option, with_app
from idp.extensions import db as sqla
from idp.notify.mailer import send_mail
from idp.onboarding import service


@click.group("onboarding")
def onboarding_group() -> None:
    """Provider onboarding."""


@onboarding_group.command("check-licenses")
@json_option
@with_app(ensure_keys=False)
def onboarding_check_licenses(as_json: bool) -> None:
    """Warn clinicians by email before their license expires (once, policies/onboarding.toml
    license_warning_days) and suspend the clinical role of expired licenses. For cron, daily."""
    run = service.check_licenses()
    sqla.session.commit()
    warned = [(u.username, send_mail(*service.warning_mail(u))) for u in run.warned]
    suspended = [(u.username, send_mail(*service.suspended_mail(u))) for u in run.suspended]
    data = {"warned": [name for name, _ in warned],
            "suspended": [name for name, _ in suspended],
            "mail_failed": [name for name, sent in warned + suspended if not sent]}
    emit(as_json, data, f"{len(warned)} warned, {len(suspended)} clinical roles suspended"
         + (f"; {len(data['mail_failed'])} emails failed" if data["mail_failed"] else ""))


@onboarding_group.command("renew-license")
@click.argument("login")
@click.option("--expires", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="the renewed license's expiry date, YYYY-MM-DD")
@click.option("--number", default=None, help="the license number, when it changed")
@json_option
@with_app(ensure_keys=False)
def onboarding_renew_license(login: str, expires: Any, number: str | None,
                             as_json: bool) -> None:
    """Record a renewed license: lifts the clinical suspension of an expired one."""
    user = account(login)
    try:
        service.renew_license(user, expires.date(), number, "cli")
    except service.OnboardingError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sqla.session.commit()
    emit(as_json, {"username": user.username, "license_expires": expires.date().isoformat(),
                   "clinical_suspended": user.clinical_suspended},
         f"{user.username}: license valid until {expires.date().isoformat()}")
