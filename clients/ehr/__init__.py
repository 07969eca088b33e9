"""The EHR: a relying party of the IdP (patient list pages) and a resource server (JSON API
protected by the IdP's JWT access tokens). `gunicorn "clients.ehr:create_app()"`."""

from __future__ import annotations

import os

from flask import Flask

from clients import rp
from clients.ehr import scopes
from clients.ehr.tokens import AccessTokenVerifier

DEFAULT_URL = "http://127.0.0.1:8002"
SCOPE = scopes.scope_string(*scopes.IDENTITY_SCOPES, *scopes.READ_SCOPES)


def create_app(env: dict[str, str] | None = None) -> Flask:
    """Settings from the environment: IDP_ISSUER, EHR_URL, EHR_AUDIENCE, EHR_CLIENT_ID,
    EHR_CLIENT_SECRET, EHR_SECRET_KEY, EHR_STATE_DIR (the back-channel logout record)."""
    env = dict(os.environ if env is None else env)
    settings = rp.RpSettings.from_env("ehr", "EHR", DEFAULT_URL, SCOPE, env)
    app = Flask(__name__)
    rp.init_rp(app, settings)
    audience = env.get("EHR_AUDIENCE", DEFAULT_URL).rstrip("/")
    app.extensions["ehr.verifier"] = AccessTokenVerifier(settings.issuer, audience)

    from clients.ehr.api import bp as api_bp
    from clients.ehr.prescriptions import bp as prescriptions_bp
    from clients.ehr.views import bp as pages_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(pages_bp)
    app.register_blueprint(prescriptions_bp)
    return app
