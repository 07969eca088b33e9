"""Onboarding plugs in: its public and admin pages, and its compliance reports
(idp.onboarding.reports registers them with idp.reports.registry as it is imported)."""

from __future__ import annotations

from flask import Flask

from idp.onboarding import reports  # noqa: F401  (registers the onboarding reports)
from idp.onboarding.views import admin_bp, bp


def install(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(admin_bp)
