"""Upstream OpenID Providers plug in: their pages, the login page's "Sign in with <name>"
buttons (idp.core.login_options), two sign-in purposes (idp.mfa.flow), and the onboarding
pre-fill of an unknown upstream identity (idp.core.applicants). create_app calls install()
only when policies/upstreams.toml has `enabled = true`."""

from __future__ import annotations

from flask import Flask, url_for

from idp.core import applicants, events, login_options
from idp.federation.upstream import onboarding, service, signin
from idp.federation.upstream.views import bp


def _options(next_url: str) -> list[login_options.LoginOption]:
    return [login_options.LoginOption(row.name, row.name,
                                      url_for("upstream.start", name=row.name, next=next_url))
            for row in service.listing(enabled_only=True)]


def install(app: Flask) -> None:
    app.register_blueprint(bp)
    login_options.register(app, _options)
    signin.install(app)
    applicants.register(app, onboarding.prefill)
    events.subscribe(app, events.APPLICATION_SUBMITTED, onboarding.on_submitted)
    events.subscribe(app, events.APPLICATION_APPROVED, onboarding.on_approved)
