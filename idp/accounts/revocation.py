"""Ending an account's sessions and revoking its tokens: what a password change or reset, a
disabled account and "sign out everywhere" share."""

from __future__ import annotations

from sqlalchemy import and_, or_

from idp.oidc.tokens import revoke_where
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
    def condition(model: type) -> object:
        if keep_sid is None:
            return model.user_id == user_id
        return and_(model.user_id == user_id, or_(model.sid.is_(None), model.sid != keep_sid))

    revoke_where(condition)
