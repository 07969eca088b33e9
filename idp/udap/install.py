"""UDAP plugs into the OpenID provider through idp.oidc.registry: a Registrar (UDAP requests
at /register), an assertion source (x5c client assertions of UDAP-registered clients, with
hl7-b2b), its discovery document, and Tiered OAuth: an /authorize check sending `idp=`
requests to their upstream through the broker (idp.core.brokering), and the client
authentication our token requests there use. create_app installs it while policies/udap.toml has
`enabled = true`."""

from __future__ import annotations

from flask import Flask

from idp.core import admin_nav, brokering
from idp.core.i18n import lazy_gettext as _l
from idp.oidc.interaction.pipeline import Check
from idp.oidc.registry import Registrar, add_feature
from idp.udap import service, tiered
from idp.udap.views import bp


def install(app: Flask) -> None:
    add_feature(app, "udap",
                registrars=[Registrar(service.recognizes, service.verify_registration)],
                assertion_sources=[service.assertion_check],
                checks=[Check("udap_to", tiered.check, before="session")])
    brokering.register_client_auth(app, tiered.CLIENT_AUTH, tiered.assertion)
    app.register_blueprint(bp)
    admin_nav.add(app, admin_nav.NavEntry("udap.admin_page", _l("UDAP"), lambda: ("admin",),
                                          order=85))
