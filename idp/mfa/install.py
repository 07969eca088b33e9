"""Install MFA on an app, in one place: the factor registry (the built-in factor modules
register themselves when imported here), the built-in purposes, and the mfa blueprint with
the routes its view modules added."""

from __future__ import annotations

from flask import Flask

from idp.mfa import enroll_views, manage_views, views, webauthn_views  # noqa: F401  (routes)
from idp.mfa.blueprint import bp
from idp.mfa.factors import otp_code, recovery, totp, webauthn  # noqa: F401  (register)
from idp.mfa.factors import registry as factor_registry
from idp.mfa.flow import BUILTIN_PURPOSES, register_purpose


def install(app: Flask) -> None:
    factor_registry.install(app)
    for purpose in BUILTIN_PURPOSES:
        register_purpose(app, purpose)
    app.register_blueprint(bp)
