"""Revoking the tokens the account side withdraws (idp.core.events TOKENS_WITHDRAWN): a
password change or reset, a disabled account, signing out everywhere or one session."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import and_, or_

from idp.core import events
from idp.oidc.tokens import revoke_session_tokens, revoke_where


def install(app: Flask) -> None:
    events.subscribe(app, events.TOKENS_WITHDRAWN, on_tokens_withdrawn)


def on_tokens_withdrawn(user_id: int, sid: str | None, keep_sid: str | None) -> None:
    """The tokens issued in session `sid`; else every token of the account but those issued
    in session `keep_sid` (None: every one)."""
    if sid is not None:
        revoke_session_tokens(sid)
        return

    def condition(model: Any) -> Any:  # RefreshToken or AccessTokenRecord (revoke_where)
        if keep_sid is None:
            return model.user_id == user_id
        return and_(model.user_id == user_id, or_(model.sid.is_(None), model.sid != keep_sid))

    revoke_where(condition)
