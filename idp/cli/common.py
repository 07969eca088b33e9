"""What every `idp` command shares: the application it runs in, --json, the output, the account
a LOGIN argument names."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click
from flask import Flask

from idp import create_app
from idp.accounts.models import User
from idp.accounts.service import find_by_login
from idp.config import ConfigError, Settings
from idp.oidc.backchannel import deliver_pending
from idp.policy import PolicyError


def load_app(ensure_keys: bool = True) -> Flask:
    """The application from the environment; exit 2 with one line when its configuration or
    policy is refused."""
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
    """Run the command in an application context; afterwards, deliver the back-channel logout
    tokens of the sessions it ended (and committed)."""
    def decorator(func: Callable) -> Callable:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            app = load_app(ensure_keys)
            with app.app_context():
                result = func(*args, **kwargs)
                deliver_pending()
                return result
        return wrapper
    return decorator


def account(login: str) -> User:
    """The account a username or NPI names; exit 2 with one line when there is none."""
    user = find_by_login(login)
    if user is None:
        click.echo(f"error: no account with username or NPI {login!r}", err=True)
        sys.exit(2)
    return user
