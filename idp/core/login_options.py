"""Other ways to sign in, offered on the login page beside the password form ("Sign in with
Hospital Entra ID"). The accounts package renders what this registry holds and knows no
feature: a feature (idp.federation.upstream) registers a provider at install time.

A provider is called with the page's `next` URL and returns the options to show; `hint`
(the `idp_hint` parameter, Keycloak's kc_idp_hint) picks one option by key, and the login page
then sends the browser straight there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

EXTENSION = "idp.login_options"


@dataclass(frozen=True)
class LoginOption:
    key: str      # what idp_hint names
    label: str    # the button's text, already translated
    url: str      # where the button goes (same site)


Provider = Callable[[str], list[LoginOption]]


def register(app: Flask, provider: Provider) -> None:
    providers = app.extensions.setdefault(EXTENSION, [])
    if provider not in providers:
        providers.append(provider)


def options(next_url: str) -> list[LoginOption]:
    return [option for provider in current_app.extensions.get(EXTENSION, ())
            for option in provider(next_url)]


def hinted(hint: str, next_url: str) -> LoginOption | None:
    """The option `hint` names, or None (an unknown hint is ignored: the page is shown)."""
    if not hint:
        return None
    return next((o for o in options(next_url) if o.key == hint), None)
