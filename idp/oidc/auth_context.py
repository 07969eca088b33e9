"""How the user authenticated: carried from the session (or an EPCS ceremony) into codes,
tokens and claims."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from idp.sessions.models import SsoSession


@dataclass
class AuthContext:
    sid: str | None
    auth_time: datetime
    acr: str | None
    amr: list[str] = field(default_factory=list)
    family_id: str | None = None

    @classmethod
    def of_session(cls, sso: SsoSession) -> AuthContext:
        """The SSO session's own sign-in."""
        return cls(sid=sso.id, auth_time=sso.auth_time, acr=sso.acr, amr=list(sso.amr or []))
