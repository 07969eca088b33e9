"""The OpenID provider's part of create_app: its extension registry (for the features that
install after it), the Authlib server, the protocol endpoints, and the subscriptions: to ended
sessions (back-channel logout; session-bound refresh tokens) and to withdrawn tokens."""

from __future__ import annotations

from flask import Flask

from idp.core import events
from idp.oidc import backchannel, device_grant, device_views, registry, tokens, withdrawal
from idp.oidc.server import init_oauth, server
from idp.oidc.views import bp


def install(app: Flask) -> None:
    registry.install(app)
    init_oauth(app)
    device_grant.register(server)
    app.register_blueprint(bp)
    app.register_blueprint(device_views.bp)
    backchannel.install(app)
    withdrawal.install(app)
    events.subscribe(app, events.SESSION_ENDED, _session_ended)


def _session_ended(sids: list[str], reason: str) -> None:
    """Whatever ended the sessions, their session-bound refresh tokens end with them."""
    tokens.revoke_session_bound(sids)
