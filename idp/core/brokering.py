"""Identity brokering between features, without their knowing each other.

A feature that signs people in at upstream OpenID Providers (idp.federation.upstream) offers a
`Broker`: upstreams enrolled on demand by another feature (UDAP Tiered OAuth learns an
upstream from the client's `idp=` parameter and registers with it by UDAP dynamic
registration), the trip there, and which upstream signed a session in. The broker keeps
everything else its own: state, nonce and PKCE, the ID token's verification, the linking
rules, our second factor and the gates.

A feature that authenticates our client to an upstream's token endpoint in its own way (UDAP:
private_key_jwt whose assertion carries the server certificate in `x5c`) registers a
`ClientAuth` under a name; an enrolled upstream names the one its token requests use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app, session

BROKER = "idp.broker"
CLIENT_AUTH = "idp.broker_client_auth"


class BrokerRefused(Exception):
    """The broker cannot send anyone to this upstream (e.g. an admin disabled it); str() is
    safe to show."""


@dataclass(frozen=True)
class Enrolment:
    """An upstream enrolled by a feature: our client there and how it authenticates."""

    issuer: str
    client_id: str
    client_auth: str     # the name of a registered ClientAuth
    scope: str           # asked at the upstream ("openid udap")
    label: str           # who enrolled it, for the console ("udap")


@dataclass(frozen=True)
class Broker:
    # issuer -> our redirect URI at that upstream (known before registering there)
    redirect_uri: Callable[[str], str]
    # (issuer, client_auth) -> our client_id there when enrolled, else None; BrokerRefused
    # when the upstream exists but is disabled
    registered: Callable[[str, str], str | None]
    # record (or update) an enrolled upstream
    enrol: Callable[[Enrolment], None]
    # (issuer, same-site URL to come back to) -> same-site URL that starts the trip there
    start_url: Callable[[str, str], str]
    # SSO session id -> the issuer of the upstream that signed it in, or None
    signed_in_by: Callable[[str], str | None]


# (our client_id at the upstream, its token endpoint) -> form parameters authenticating us
ClientAuth = Callable[[str, str], dict[str, str]]


def set_broker(app: Flask, broker: Broker) -> None:
    app.extensions[BROKER] = broker


def broker() -> Broker | None:
    """The installed broker, or None (upstream sign-in switched off)."""
    return current_app.extensions.get(BROKER)


def register_client_auth(app: Flask, name: str, auth: ClientAuth) -> None:
    app.extensions.setdefault(CLIENT_AUTH, {})[name] = auth


def client_auth(name: str) -> ClientAuth | None:
    return current_app.extensions.get(CLIENT_AUTH, {}).get(name)


# -- a trip that failed, told to the feature that asked for it -------------------------------
FAILED_KEY = "broker_failed"  # flow cookie: {"issuer": ..., "error": ...}


def note_failure(issuer: str, error: str) -> None:
    """The broker could not complete the sign-in at `issuer` that a feature started (an
    invalid state, the upstream's error, an ID token refused): the browser goes back to the
    feature's URL, which reads this once (`take_failure`) and answers its client `error`."""
    session[FAILED_KEY] = {"issuer": issuer, "error": error}


def take_failure(issuer: str) -> str | None:
    found = session.get(FAILED_KEY)
    if not isinstance(found, dict) or found.get("issuer") != issuer:
        return None
    session.pop(FAILED_KEY, None)
    error = found.get("error")
    return error if isinstance(error, str) else None
