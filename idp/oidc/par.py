"""Pushed authorization requests (RFC 9126) and how /authorize reads a request it is handed by
reference or by value.

A client pushes its request's parameters (or a signed request object, idp.oidc.request_object)
to /par and gets a `request_uri` (urn:ietf:params:oauth:request_uri:<random>), which it sends
to /authorize with its client_id. The URI must reach /authorize within the policy's
request_uri_lifetime; from that first visit the request stays open for its sign-in and consent
(interaction_lifetime) and the authorization response uses it up: a second response from the
same URI is refused (invalid_request_uri). No other request_uri is accepted: the IdP never
fetches a URL a request names.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, cast

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from sqlalchemy import CursorResult, delete, update

from idp import clock
from idp.context import policy
from idp.core.crypto import digest
from idp.extensions import db
from idp.oidc import client_profile, request_object
from idp.oidc.models import Client, PushedRequest

URN = "urn:ietf:params:oauth:request_uri:"
PURGE_EVERY = 200
# Client authentication travels with the pushed request; it is not one of its parameters.
CLIENT_AUTH_PARAMS = frozenset({"client_secret", "client_assertion", "client_assertion_type"})


# How an authorization request reached us, as `oauth_request.request_channel` (absent: a plain
# query, which anyone can forge): pushed by an authenticated client (a public client's push
# does not count) or a request object signed with the client's registered key. Features that
# take parameters only from a request the client vouches for (EPCS authorization_details) read it.
PUSHED = "pushed"
SIGNED = "signed"


class InvalidRequestUri(OAuth2Error):
    """RFC 9101 §6.2: the request_uri is unknown, expired, used or not ours."""

    error = "invalid_request_uri"
    status_code = 400


class PushRefused(InvalidRequestError):
    """A pushed request's own faults (invalid_request, 400)."""


def pushed_parameters(client: Client, form: Mapping[str, list[str]]) -> dict[str, str]:
    """The authorization request `client` pushed (a form of name -> values), unpacked from
    its request object when it sent one. Its validation as an authorization request is the
    caller's (the same as /authorize's)."""
    repeated = [name for name, values in form.items() if len(values) != 1]
    if repeated:
        raise PushRefused(f"'{sorted(repeated)[0]}' given more than once")
    params = {name: values[0] for name, values in form.items() if name not in CLIENT_AUTH_PARAMS}
    if "request_uri" in params:
        raise PushRefused("request_uri cannot be pushed (RFC 9126 section 2.1)")
    if params.get("client_id", client.client_id) != client.client_id:
        raise PushRefused("client_id is not the authenticated client")
    if "request" in params:
        params = request_object.parameters(client, params["request"])
    params["client_id"] = client.client_id
    return params


def store(client: Client, params: dict[str, str]) -> tuple[str, int]:
    """Keep a validated pushed request; its request_uri and seconds to use it."""
    lifetime = policy().fapi.par.request_uri_lifetime
    uri = URN + secrets.token_urlsafe(32)
    if secrets.randbelow(PURGE_EVERY) == 0:  # requests past their lifetime, used or not
        db.session.execute(delete(PushedRequest).where(PushedRequest.expires_at <= clock.now()))
    db.session.add(PushedRequest(uri_hash=digest(uri), client_id=client.client_id,
                                 params=params,
                                 expires_at=clock.now() + timedelta(seconds=lifetime)))
    return uri, lifetime


def expand(oauth_request: Any, query_client: Callable[[str], Client | None]) -> None:
    """/authorize: replace the request's parameters with those of its request_uri (pushed)
    or its request object (by value); refuse a plain request from a client that must push."""
    data = oauth_request.payload.data
    client_id = data.get("client_id")
    if "request_uri" in data:
        record = _open(data["request_uri"], client_id)
        params = dict(record.params)
        oauth_request.pushed_uri_hash = record.uri_hash
        pusher = query_client(client_id) if isinstance(client_id, str) else None
        if pusher is not None and not pusher.is_public:
            oauth_request.request_channel = PUSHED
    else:
        client = query_client(client_id) if isinstance(client_id, str) else None
        if client is not None and client_profile.requires_par(client):
            raise InvalidRequestError("this client must push its authorization requests "
                                      "(PAR, RFC 9126)")
        if "request" not in data:
            return
        if client is None:
            raise InvalidRequestError("client_id: unknown client")
        params = request_object.parameters(client, data["request"])
        oauth_request.request_channel = SIGNED
    params["client_id"] = client_id
    oauth_request.payload = BasicOAuth2Payload(params)


def _open(uri: object, client_id: object) -> PushedRequest:
    if not isinstance(uri, str) or not uri.startswith(URN) or len(uri) > 200:
        raise InvalidRequestUri("request_uri: only a request_uri from this server's PAR "
                                "endpoint is accepted")
    record = db.session.get(PushedRequest, digest(uri))
    if record is None or record.client_id != client_id:
        raise InvalidRequestUri("request_uri: unknown for this client")
    if record.used_at is not None:
        raise InvalidRequestUri("request_uri: used already")
    now = clock.now()
    if record.expires_at <= now:
        raise InvalidRequestUri("request_uri: expired")
    if record.opened_at is None:
        record.opened_at = now
        record.expires_at = now + timedelta(seconds=policy().fapi.par.interaction_lifetime)
        db.session.commit()
    return record


def consume(oauth_request: Any) -> bool:
    """Use up the pushed request behind this authorization response; False if another
    response used it first (or it was never pushed: True)."""
    key = getattr(oauth_request, "pushed_uri_hash", None)
    if key is None:
        return True
    claimed = cast(CursorResult, db.session.execute(
        update(PushedRequest).where(PushedRequest.uri_hash == key, PushedRequest.used_at.is_(None))
        .values(used_at=clock.now()).execution_options(synchronize_session=False))).rowcount
    db.session.commit()
    return bool(claimed)
