"""Onboarding plugs in: its public and admin pages, and its compliance reports
(idp.onboarding.reports registers them with idp.reports.registry as it is imported)."""

from __future__ import annotations

from flask import Flask

from idp.core import admin_nav
from idp.core.i18n import lazy_gettext as _l
from idp.onboarding import (
    reports,  # noqa: F401  (registers the onboarding reports)
    service,
)
from idp.onboarding.views import admin_bp, bp


def install(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(admin_bp)
    admin_nav.add(app, admin_nav.NavEntry("onboarding_admin.verifications", _l("Verifications"),
                                          lambda: service.rules().reviewer_roles, order=60))
    admin_nav.add(app, admin_nav.NavEntry("onboarding_admin.facilities", _l("Facilities"),
                                          lambda: service.rules().facility_admin_roles,
                                          order=70))
    admin_nav.add_tile(app, admin_nav.Tile("onboarding_admin.verifications",
                                           _l("Provider applications waiting"),
                                           service.open_count,
                                           lambda: service.rules().reviewer_roles, order=10))
