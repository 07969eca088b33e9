"""The federation's side of idp.core.brokering: upstreams another feature enrolls on demand
(UDAP Tiered OAuth), signed in through the same trip, ID token verification, linking rules,
second factor and gates as the operator's upstreams. Such an upstream is named after its
issuer ("to-" and 16 hex digits of its SHA-256), is not offered on the login page, and shows
in the console (Upstreams) where an admin may disable it."""

from __future__ import annotations

import hashlib

from flask import url_for
from sqlalchemy import select

from idp.context import settings
from idp.core import brokering
from idp.extensions import db
from idp.federation.upstream import service
from idp.federation.upstream.models import Upstream, UpstreamSession


def name_for(issuer: str) -> str:
    return "to-" + hashlib.sha256(issuer.encode()).hexdigest()[:16]


def redirect_uri(issuer: str) -> str:
    return f"{settings().issuer}/upstream/{name_for(issuer)}/callback"


def _row(issuer: str) -> Upstream | None:
    row = service.by_name(name_for(issuer))
    return row if row is not None and row.issuer == issuer else None


def registered(issuer: str, client_auth: str) -> str | None:
    row = _row(issuer)
    if row is None or row.client_auth != client_auth:
        return None
    if not row.enabled:
        raise brokering.BrokerRefused("an administrator disabled this upstream")
    return row.client_id


def enrol(made: brokering.Enrolment) -> None:
    row = _row(made.issuer)
    if row is None:
        service.create(name=name_for(made.issuer), issuer=made.issuer,
                       client_id=made.client_id, client_secret=None, scope=made.scope,
                       actor=f"broker:{made.label}", client_auth=made.client_auth)
        return
    if not row.enabled:
        raise brokering.BrokerRefused("an administrator disabled this upstream")
    row.client_id, row.scope, row.client_auth = made.client_id, made.scope, made.client_auth


def start_url(issuer: str, next_url: str) -> str:
    return url_for("upstream.start", name=name_for(issuer), next=next_url)


def signed_in_by(sso_session_id: str) -> str | None:
    return db.session.execute(
        select(Upstream.issuer).join(UpstreamSession, UpstreamSession.upstream_id == Upstream.id)
        .where(UpstreamSession.sso_session_id == sso_session_id)).scalar_one_or_none()


BROKER = brokering.Broker(redirect_uri=redirect_uri, registered=registered, enrol=enrol,
                          start_url=start_url, signed_in_by=signed_in_by)
