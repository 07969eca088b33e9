"""Who may use admin pages: a signed-in holder of an allowed console role whose session reached
policies/roles.toml [console] min_acr or better and authenticated recently (policies/mfa.toml
reauth_window).

The role groups are policy (roles.toml [console]): by default `admin` may do everything;
`security` views the audit trail and alerts, looks up users and terminates sessions; `verifier`
works the verification queue."""

from __future__ import annotations

import functools
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from flask import Response, abort, redirect, request, url_for

from idp import clock
from idp.context import policy
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class RoleGroup:
    """A role group of roles.toml [console] (`<name>_roles`), read from the policy whenever
    asked: `role in ADMIN_ROLES`."""

    name: str

    def roles(self) -> tuple[str, ...]:
        return getattr(policy().console, f"{self.name}_roles")

    def __contains__(self, role: object) -> bool:
        return role in self.roles()


ADMIN_ROLES = RoleGroup("admin")
CONSOLE_ROLES = RoleGroup("console")
SECURITY_ROLES = RoleGroup("security")


def require_admin(roles: Container[str] = ADMIN_ROLES) -> SsoSession | Response:
    """The session of an allowed console user, or the response to send instead: sign in
    (none), 403 (wrong role or too weak a sign-in), sign in again (authentication too old)."""
    sso = sessions.current()
    if sso is None:
        return redirect(url_for("accounts.login", next=request.full_path))
    if sso.user.role not in roles:
        abort(403)
    assurance = policy().assurance
    if assurance.rank(sso.acr) < assurance.rank(policy().console.min_acr):
        abort(403)
    if (clock.now() - sso.auth_time).total_seconds() > policy().mfa.reauth_window:
        return redirect(url_for("accounts.login", next=request.full_path, reauth=1))
    return sso


def require_role(roles: Container[str] | Callable[[], Container[str]] = ADMIN_ROLES
                 ) -> Callable[[Callable[Concatenate[SsoSession, P], R]],
                               Callable[P, R | Response]]:
    """Run the view as `view(sso, **url_values)` for an allowed console user; anyone else gets
    require_admin's answer. `roles` is a role group, or a function returning the roles (read
    at each request: policy can change them)."""

    def decorate(view: Callable[Concatenate[SsoSession, P], R]) -> Callable[P, R | Response]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            sso = require_admin(roles() if callable(roles) else roles)
            if isinstance(sso, Response):
                return sso
            return view(sso, *args, **kwargs)

        return guarded

    return decorate


def actor(sso: SsoSession) -> str:
    """How audit events name the admin who acted."""
    return f"admin:{sso.user_id}"
