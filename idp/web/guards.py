"""`@signed_in`: a page that needs a live SSO session gets it as its first argument; a visitor
without one is sent to sign in and back.

The owed steps (a forced password change, the daily acknowledgment) and the recent sign-in
are enforced before any view runs, by idp.web.gates; `recent=True` marks the route for the
latter. The admin console's role check is `idp.admin.access.require_role`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from flask import redirect, request, url_for
from werkzeug.wrappers import Response

from idp.sessions import service as sessions
from idp.sessions.models import SsoSession
from idp.web.gates import recent_sign_in, this_page

P = ParamSpec("P")
R = TypeVar("R")


def login_url(back: str | None = None) -> str:
    """Sign in, then back: to this page for a GET, else to the endpoint `back` (by default
    the account page: a form's POST cannot be replayed after signing in)."""
    if request.method == "GET":
        return url_for("accounts.login", next=this_page())
    return url_for("accounts.login", next=url_for(back or "accounts.account"))


def signed_in(*, recent: bool = False, back: str | None = None
              ) -> Callable[[Callable[Concatenate[SsoSession, P], R]], Callable[P, R | Response]]:
    """Call the view as `view(sso, **url_values)`; without a live session, redirect to sign
    in (see login_url for `back`). `recent`: the sign-in must be within policies/mfa.toml
    `reauth_window` (checked by idp.web.gates before the view)."""

    def decorate(view: Callable[Concatenate[SsoSession, P], R]) -> Callable[P, R | Response]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            sso = sessions.current()
            if sso is None:
                return redirect(login_url(back))
            return view(sso, *args, **kwargs)

        return recent_sign_in(guarded) if recent else guarded

    return decorate
