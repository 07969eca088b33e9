"""The OpenID provider's part of create_app: its extension registry (for the features that
install after it), the Authlib server, the protocol endpoints, back-channel logout's
subscription to ended sessions and token revocation's to withdrawn tokens."""

from __future__ import annotations

from flask import Flask

from idp.oidc import backchannel, registry, withdrawal
from idp.oidc.server import init_oauth
from idp.oidc.views import bp


def install(app: Flask) -> None:
    registry.install(app)
    init_oauth(app)
    app.register_blueprint(bp)
    backchannel.install(app)
    withdrawal.install(app)
