"""Break-glass plugs into the OpenID provider (idp.oidc.registry: its /authorize check, the
`purpose_of_use` and `emergency` claims, the code binder), into the MFA flow (the purpose
"breakglass": the second factor again) and adds its pages. create_app installs it while
policies/breakglass.toml has `enabled = true`."""

from __future__ import annotations

from typing import Any

from flask import Flask

from idp.accounts.models import User
from idp.breakglass import service
from idp.breakglass.views import bp
from idp.core import admin_nav
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db
from idp.mfa import flow
from idp.mfa.models import LoginAttempt
from idp.oidc.auth_context import AuthContext
from idp.oidc.authorize import AuthorizationRequestError
from idp.oidc.interaction.checks import sign_in
from idp.oidc.interaction.pipeline import Check, Interaction, Outcome
from idp.oidc.registry import add_feature
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession


def check(ix: Interaction) -> Outcome | None:
    """The scope asks for emergency access: a request page and a fresh sign-in every time."""
    if not service.requested(ix.scope):
        return None
    step = service.authorize_step(ix.sso, ix.params.get("prompt") or "", ix.key,
                                  ix.client.client_id, ix.return_to)
    db.session.commit()
    if step.kind == "login":
        return sign_in(ix, "breakglass_login")
    if step.kind == "refuse":
        return Outcome.fail("breakglass_refused", AuthorizationRequestError(
            step.description, ix.redirect_uri, step.error))
    if step.kind == "request":
        assert step.episode is not None
        return Outcome.go("breakglass_request", "breakglass.request",
                          episode_id=step.episode.id)
    episode = step.episode
    assert episode is not None and episode.verified_at is not None and ix.sso is not None
    amr = list(ix.sso.amr or []) + [a for a in episode.amr if a not in (ix.sso.amr or [])]
    ix.auth = AuthContext(sid=ix.sso.id, auth_time=episode.verified_at, acr=ix.sso.acr,
                          amr=amr)
    ix.values[service.VALUE] = episode.id
    return None


def claims(user: User, allowed: set[str]) -> dict[str, Any]:
    """ID token / userinfo (scope emergency_access): the user's running entitlement."""
    if not {"purpose_of_use", "emergency"} & allowed:
        return {}
    found = service.entitlement_claims(service.active(user_id=user.id))
    return {k: v for k, v in found.items() if k in allowed}


def token_claims(user: User, granted: list[str], ctx: AuthContext | None) -> dict[str, Any]:
    """Access tokens of the grant the episode was used for, while the entitlement runs (a
    refresh after it ends carries none)."""
    if service.rules().scope not in granted or ctx is None or ctx.family_id is None:
        return {}
    return service.entitlement_claims(service.active(family_id=ctx.family_id))


def _complete(attempt: LoginAttempt, user: User, verified: flow.Verified) -> SsoSession | None:
    service.complete(attempt, user, verified.amr)
    return sessions.current()


PURPOSE = flow.Purpose("breakglass", _complete, signed_in=True)


def install(app: Flask) -> None:
    add_feature(app, "breakglass", claims=[claims], token_claims=[token_claims],
                code_binders=[service.bind_code],
                checks=[Check("breakglass", check, before="consent")])
    flow.register_purpose(app, PURPOSE)
    app.register_blueprint(bp)
    admin_nav.add(app, admin_nav.NavEntry("breakglass.review_queue", _l("Break-glass review"),
                                          lambda: service.rules().reviewer_roles, order=85))
    admin_nav.add_tile(app, admin_nav.Tile("breakglass.review_queue",
                                           _l("Emergency accesses waiting for review"),
                                           lambda: len(service.queue()),
                                           lambda: service.rules().reviewer_roles, order=70))
