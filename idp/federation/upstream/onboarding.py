"""A new person signed in upstream: the onboarding form is pre-filled from the upstream's
claims (idp.core.applicants), the application lands in the verification queue like any other
(NPI and license still checked by a verifier), and its approval links the upstream identity
to the new account. Onboarding itself is not imported: it calls these through the registry
and its events."""

from __future__ import annotations

from flask import has_request_context, session
from sqlalchemy import select

from idp.accounts.models import User
from idp.core.applicants import Prefill
from idp.extensions import db
from idp.federation.upstream import service, signin
from idp.federation.upstream.models import Upstream, UpstreamPending


def prefill() -> Prefill | None:
    if not has_request_context():
        return None
    item = service.pending(session.get(signin.PENDING_KEY))
    if item is None or item.application_id is not None:
        return None
    row = db.session.get(Upstream, item.upstream_id)
    claims = item.claims or {}
    email = str(claims.get("email") or "")
    return Prefill(source=f"upstream:{row.name if row else item.upstream_id}",
                   given_name=str(claims.get("given_name", ""))[:100],
                   family_name=str(claims.get("family_name", ""))[:100],
                   email=email[:254], email_verified=claims.get("email_verified") is True,
                   npi=str(claims.get("npi", ""))[:10])


def on_submitted(application_id: int, source: str | None) -> None:
    if source is None or not source.startswith("upstream:") or not has_request_context():
        return
    item = service.pending(session.get(signin.PENDING_KEY))
    if item is not None and item.application_id is None:
        item.application_id = application_id
        session.pop(signin.PENDING_KEY, None)


def on_approved(application_id: int, user_id: int) -> None:
    item = db.session.execute(select(UpstreamPending).where(
        UpstreamPending.application_id == application_id)).scalars().first()
    user = db.session.get(User, user_id)
    if item is None or user is None or item.used_at is not None:
        return
    if service.use_pending(item):
        service.link_pending(item, user, "onboarding", actor="onboarding")
