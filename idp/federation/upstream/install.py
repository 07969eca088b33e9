"""Upstream OpenID Providers plug in: their pages, the login page's "Sign in with <name>"
buttons (idp.core.login_options), two sign-in purposes (idp.mfa.flow), and the onboarding
pre-fill of an unknown upstream identity (idp.core.applicants). create_app calls install()
only when policies/upstreams.toml has `enabled = true`."""

from __future__ import annotations

from flask import Flask, url_for

from idp.context import settings
from idp.core import (
    account_pages,
    admin_nav,
    applicants,
    brokering,
    events,
    login_options,
    logout_offers,
)
from idp.core.i18n import lazy_gettext as _l
from idp.federation.upstream import broker, onboarding, service, signin
from idp.federation.upstream.views import admin_bp, bp


def N_(message: str) -> str:  # noqa: N802  (babel's keyword: marks a msgid, translated later)
    return message


def _options(next_url: str) -> list[login_options.LoginOption]:
    return [login_options.LoginOption(row.name, row.name,
                                      url_for("upstream.start", name=row.name, next=next_url))
            for row in service.listing(enabled_only=True)
            if row.client_auth == "client_secret"]  # enrolled by a feature: not a button


def _logout_offers(sso_session_id: str) -> list[logout_offers.LogoutOffer]:
    found = service.logout_at_upstream(sso_session_id, f"{settings().issuer}/login")
    return [logout_offers.LogoutOffer(found[0].name, found[1])] if found else []


def install(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(admin_bp)
    admin_nav.add(app, admin_nav.NavEntry("upstream_admin.upstreams", _l("Upstreams"),
                                          lambda: ("admin",), order=80))
    login_options.register(app, _options)
    logout_offers.register(app, _logout_offers)
    account_pages.register(app, account_pages.AccountPage(
        "upstream.linked_identities", N_("Linked sign-in identities"),
        N_("your accounts at your organization's identity provider.")))
    signin.install(app)
    brokering.set_broker(app, broker.BROKER)
    applicants.register(app, onboarding.prefill)
    events.subscribe(app, events.APPLICATION_SUBMITTED, onboarding.on_submitted)
    events.subscribe(app, events.APPLICATION_APPROVED, onboarding.on_approved)
