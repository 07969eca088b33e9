"""In-process domain events: a lower layer announces, a higher one subscribes (the way the
core hears of features without importing them).

Synchronous and in the caller's transaction: `emit` runs every handler before it returns, so
what a handler writes commits (or rolls back) with the change that caused the event. One
subscriber list per application (`app.extensions["idp.events"]`), filled at start by the
installs of the packages that listen.

Events:
- SESSION_ENDED (sids: list[str], reason: str): SSO sessions just ended (idp.sessions).
- TOKENS_WITHDRAWN (user_id: int, sid: str | None, keep_sid: str | None): an account's tokens
  must stop working (idp.accounts: a password change or reset, a disabled account, signing out
  everywhere or one session): those issued in session `sid`, or else all of them but those
  issued in session `keep_sid` (None: all). The OpenID provider revokes them (idp.oidc).
- ACCOUNT_APPROVED (user_id: int): an onboarding application became an account (in the
  approving transaction; idp.onboarding). SMART resolves the clinician's Practitioner.
- APPLICATION_SUBMITTED (application_id: int, source: str | None): an onboarding application was
  submitted, pre-filled by `source` (idp.core.applicants) or not (None).
- APPLICATION_APPROVED (application_id: int, user_id: int): the application became that
  account (beside ACCOUNT_APPROVED; a pre-filling feature links its identity).
- AUDIT_RECORDED (seq: int): an audit event was appended in the current transaction
  (idp.audit); the audit stream delivers it once that transaction has committed.
- ROLE_CHANGED (user_id: int, role: str, clinical: bool, actor: str): an account was given
  another role outside the admin console (SCIM provisioning); EPCS withdraws its permission
  when the new role is not clinical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, has_app_context

SESSION_ENDED = "session_ended"
TOKENS_WITHDRAWN = "tokens_withdrawn"
AUDIT_RECORDED = "audit_recorded"
ACCOUNT_APPROVED = "account_approved"
APPLICATION_SUBMITTED = "application_submitted"
APPLICATION_APPROVED = "application_approved"
ROLE_CHANGED = "role_changed"
EXTENSION = "idp.events"

Handler = Callable[..., Any]


def subscribe(app: Flask, event: str, handler: Handler) -> None:
    """Call `handler(**payload)` on every `emit(event, ...)` in this app (once per handler)."""
    handlers = app.extensions.setdefault(EXTENSION, {}).setdefault(event, [])
    if handler not in handlers:
        handlers.append(handler)


def emit(event: str, **payload: Any) -> None:
    """Run the current app's handlers of `event`, in subscription order."""
    if not has_app_context():
        return
    for handler in current_app.extensions.get(EXTENSION, {}).get(event, ()):
        handler(**payload)


def demand(event: str, **payload: Any) -> None:
    """emit() an event whose handling is not optional (a revocation that nobody carried out
    would fail open): without an app or without a handler, raise instead of doing nothing."""
    if not has_app_context() or not current_app.extensions.get(EXTENSION, {}).get(event):
        raise RuntimeError(f"no handler for the {event} event")
    emit(event, **payload)
