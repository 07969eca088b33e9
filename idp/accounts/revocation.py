"""Ending an account's sessions and revoking its tokens: what a password change or reset, a
disabled account and "sign out everywhere" share. The tokens belong to the OpenID provider, a
layer above: revoking them is asked for with the TOKENS_WITHDRAWN event (idp.core.events),
which it handles in the same transaction."""

from __future__ import annotations

from idp.core import events
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession


def end_sessions(user_id: int, reason: str, *, keep_sid: str | None = None) -> int:
    """End every live SSO session of the account (except `keep_sid`); how many were ended."""
    where = [SsoSession.user_id == user_id]
    if keep_sid:
        where.append(SsoSession.id != keep_sid)
    return len(sessions.end_where(*where, reason=reason))


def revoke_tokens(user_id: int, *, keep_sid: str | None = None) -> None:
    """Revoke the account's refresh and access tokens: all of them, or all but those issued
    in the session kept (`keep_sid`)."""
    events.demand(events.TOKENS_WITHDRAWN, user_id=user_id, sid=None, keep_sid=keep_sid)


def revoke_session_tokens(user_id: int, sid: str) -> None:
    """Revoke the tokens issued in one session of the account (it has just ended)."""
    events.demand(events.TOKENS_WITHDRAWN, user_id=user_id, sid=sid, keep_sid=None)
