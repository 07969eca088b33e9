"""Scopes and grants a self-registered client asked for but only an admin may give.

A client registered at /register (RFC 7591) or updated at /register/<id> (RFC 7592) gets at
once what policies/scopes.toml [grants] lets anyone have; the rest of what it asked for
(clinical and other resource scopes, SMART patient/ user/ system/ scopes, the
client_credentials grant, introspect-any) is kept on the client as a pending request until an
admin approves or rejects it in the console. Clients created by operators (CLI, console) never
pass through here. No Flask request objects."""

from __future__ import annotations

from dataclasses import dataclass

from idp import clock
from idp.audit import service as audit
from idp.context import policy
from idp.oidc.models import Client
from idp.smart import scopes as smart_scopes


@dataclass(frozen=True)
class Granted:
    """What a self-registered client holds before this change (the values an admin approved
    earlier stay granted while the client still asks for them)."""

    scopes: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ()
    introspect_any: bool = False

    @classmethod
    def of(cls, client: Client) -> Granted:
        return cls(tuple((client.scope or "").split()), tuple(client.grant_types or []),
                   bool(client.introspect_any))


class NothingPending(ValueError):
    """Approve or reject asked of a client with no pending request."""


def hold_back(client: Client, *, introspect_any: bool, before: Granted | None = None,
              actor: str) -> None:
    """Split what the client asked for (its scope and grant types as just validated and
    stored, and introspect-any) into what it gets now and what waits for an admin; audited
    `client.grants_requested` when something waits."""
    rules = policy().grants
    before = before or Granted()
    asked_scopes = (client.scope or "").split()
    asked_grants = list(client.grant_types or [])

    def kept(scope: str) -> bool:
        return rules.self_service(scope) or smart_scopes.covered(scope, before.scopes)

    scopes = [s for s in asked_scopes if kept(s)]
    grants = [g for g in asked_grants
              if g in rules.self_service_grant_types or g in before.grant_types]
    pending_scopes = [s for s in asked_scopes if s not in scopes]
    pending_grants = [g for g in asked_grants if g not in grants]
    client.scope = " ".join(scopes)
    client.grant_types = grants
    client.response_types = ["code"] if "authorization_code" in grants else []
    client.introspect_any = introspect_any and before.introspect_any
    client.pending_scope = " ".join(pending_scopes) or None
    client.pending_grant_types = pending_grants or None
    client.pending_introspect_any = introspect_any and not before.introspect_any
    if not client.pending:
        client.pending_since = None
        return
    client.pending_since = client.pending_since or clock.now()
    audit.record("client.grants_requested", client_id=client.client_id, actor=actor,
                 **_pending(client))


def _pending(client: Client) -> dict:
    return {"scope": client.pending_scope or "",
            "grant_types": list(client.pending_grant_types or []),
            "introspect_any": bool(client.pending_introspect_any)}


def approve(client: Client, *, actor: str) -> dict:
    """Grant everything the client's pending request asks for; audited
    `client.grants_approved` with what was granted. Returns it."""
    if not client.pending:
        raise NothingPending("nothing waits for approval")
    what = _pending(client)
    scopes = (client.scope or "").split()
    client.scope = " ".join([*scopes, *(s for s in what["scope"].split() if s not in scopes)])
    grants = list(client.grant_types or [])
    client.grant_types = [*grants, *(g for g in what["grant_types"] if g not in grants)]
    client.response_types = ["code"] if "authorization_code" in client.grant_types else []
    client.introspect_any = bool(client.introspect_any or what["introspect_any"])
    _clear(client)
    audit.record("client.grants_approved", client_id=client.client_id, actor=actor, **what)
    return what


def reject(client: Client, *, actor: str) -> dict:
    """Drop the client's pending request (it keeps what it was granted); audited
    `client.grants_rejected` with what was refused. Returns it."""
    if not client.pending:
        raise NothingPending("nothing waits for approval")
    what = _pending(client)
    _clear(client)
    audit.record("client.grants_rejected", client_id=client.client_id, actor=actor, **what)
    return what


def _clear(client: Client) -> None:
    client.pending_scope = None
    client.pending_grant_types = None
    client.pending_introspect_any = False
    client.pending_since = None
