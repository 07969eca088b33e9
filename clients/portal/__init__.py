"""The provider portal: a thin relying party of the IdP with a role-based dashboard whose data
comes from the EHR API. `gunicorn "clients.portal:create_app()"`."""

from __future__ import annotations

import os

from flask import Flask

from clients import rp
from clients.ehr import scopes

DEFAULT_URL = "http://127.0.0.1:8001"
SCOPE = scopes.scope_string(*scopes.IDENTITY_SCOPES, *scopes.READ_SCOPES)


def create_app(env: dict[str, str] | None = None) -> Flask:
    """Settings from the environment: IDP_ISSUER, PORTAL_URL, PORTAL_CLIENT_ID,
    PORTAL_CLIENT_SECRET, PORTAL_SECRET_KEY, EHR_API, PORTAL_STATE_DIR (the back-channel
    logout record)."""
    env = dict(os.environ if env is None else env)
    settings = rp.RpSettings.from_env("portal", "Provider Portal", DEFAULT_URL, SCOPE, env)
    app = Flask(__name__)
    app.config["EHR_API"] = env.get("EHR_API", "http://127.0.0.1:8002").rstrip("/")
    rp.init_rp(app, settings)

    from clients.portal.views import bp

    app.register_blueprint(bp)
    return app
