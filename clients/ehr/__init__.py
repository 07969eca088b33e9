"""The EHR: a relying party of the IdP (patient list pages) and a resource server (JSON API
protected by the IdP's JWT access tokens). `gunicorn "clients.ehr:create_app()"`."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from flask import Flask

from clients import rp
from clients.ehr import scopes
from clients.ehr.tokens import AccessTokenVerifier

DEFAULT_URL = "http://127.0.0.1:8002"
SCOPE = scopes.scope_string(*scopes.IDENTITY_SCOPES, *scopes.READ_SCOPES)


def create_app(env: dict[str, str] | None = None) -> Flask:
    """Settings from the environment: IDP_ISSUER, EHR_URL, EHR_AUDIENCE, EHR_CLIENT_ID,
    EHR_CLIENT_SECRET, EHR_SECRET_KEY, EHR_STATE_DIR (the back-channel logout record),
    EHR_SMART_APP_CLIENT_ID, EHR_SMART_APP_LAUNCH_URL (the SMART app "Launch app" opens)."""
    env = dict(os.environ if env is None else env)
    settings = rp.RpSettings.from_env("ehr", "EHR", DEFAULT_URL, SCOPE, env)
    app = Flask(__name__)
    rp.init_rp(app, settings)
    audience = env.get("EHR_AUDIENCE", DEFAULT_URL).rstrip("/")
    app.extensions["ehr.verifier"] = AccessTokenVerifier(settings.issuer, audience)
    # The SMART app the patient list launches (EHR launch): its client_id and launch URL.
    app.extensions["ehr.smart_app"] = {
        "client_id": env.get("EHR_SMART_APP_CLIENT_ID", "smart-app"),
        "launch_url": env.get("EHR_SMART_APP_LAUNCH_URL", "http://127.0.0.1:8003/launch"),
        "name": env.get("EHR_SMART_APP_NAME", "Patient summary (SMART app)")}
    launch_url = urlsplit(app.extensions["ehr.smart_app"]["launch_url"])
    app.extensions["rp.form_targets"] = (f"{launch_url.scheme}://{launch_url.netloc}",)

    from clients.ehr.api import bp as api_bp
    from clients.ehr.controlled import bp as controlled_bp
    from clients.ehr.emergency import bp as charts_bp
    from clients.ehr.prescriptions import bp as prescriptions_bp
    from clients.ehr.smart import bp as smart_bp
    from clients.ehr.views import bp as pages_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(pages_bp)
    app.register_blueprint(prescriptions_bp)
    app.register_blueprint(smart_bp)
    app.register_blueprint(controlled_bp)
    app.register_blueprint(charts_bp)
    return app
