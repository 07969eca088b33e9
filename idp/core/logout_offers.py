"""What else a person may want to sign out of, offered on the IdP's "You are signed out" page:
the upstream identity provider a session was signed in through (RP-initiated logout there).
The OpenID provider's logout asks this registry before it ends the session and knows no
feature; a feature (idp.federation.upstream) registers a provider at install time, called with
the SSO session's id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

EXTENSION = "idp.logout_offers"


@dataclass(frozen=True)
class LogoutOffer:
    label: str   # who else: "Hospital Entra ID" (the button says "Also sign out of ...")
    url: str     # where that logout starts (another site)


Provider = Callable[[str], list[LogoutOffer]]


def register(app: Flask, provider: Provider) -> None:
    providers = app.extensions.setdefault(EXTENSION, [])
    if provider not in providers:
        providers.append(provider)


def collect(sso_session_id: str) -> list[LogoutOffer]:
    return [offer for provider in current_app.extensions.get(EXTENSION, ())
            for offer in provider(sso_session_id)]
