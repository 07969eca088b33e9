"""The account gates hold on every route (idp.web.gates), proved over the whole URL map.

A signed-in admin owing each gate in turn (today's acknowledgment, a temporary password, an
expired password, the forced change after "This wasn't me") requests every route of the app
with every method it takes; every route that is not on the reviewed allow-list must send them
to the gate (or refuse), and a refused request changes nothing. Routes come from app.url_map,
so a route added later is covered without editing this file; the allow-list is pinned here, so
widening it is a reviewed change of this file.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.routing import IntegerConverter, Rule

from idp import clock, create_app
from idp.accounts.models import Acknowledgment, User
from idp.audit.models import AuditEvent
from idp.config import Settings
from idp.context import policy
from idp.extensions import db
from idp.web import gates
from tests.conftest import TEST_POLICY
from tests.helpers import csrf_from, login, make_user

GATE_PATHS = {"/account/acknowledge", "/account/password/required"}

# The reviewed allow-list (idp.web.gates.ALLOW): adding to it means editing this set too.
REVIEWED_ALLOW = {
    "saml.slo", "saml.slo_continue", "saml.metadata", "saml.sso", "saml.launch", "saml.resume",
    "static", "accounts.required_password_change", "accounts.acknowledge", "accounts.login",
    "oidc.logout", "oidc.authorize", "mfa.challenge", "mfa.use_recovery",
    "mfa.webauthn_options", "mfa.webauthn_verify", "mfa.passkey_options", "mfa.passkey_verify",
    "upstream.start", "upstream.callback", "upstream.choose", "upstream.backchannel_logout",
    "mfa.show_recovery_codes", "oidc.token", "oidc.userinfo", "oidc.introspect", "oidc.revoke",
    "oidc.pushed_authorization_request", "device.authorization",
    "registration.register", "registration.read", "registration.replace",
    "registration.remove", "smart.register_launch", "metrics", "oidc.healthz", "oidc.readyz",
    "oidc.discovery", "oidc.jwks", "openapi.openapi", "smart.configuration", "smart.style",
    # SCIM provisioning (idp/scim): bearer tokens of HR connectors, never a browser session.
    "scim.service_provider_config_view", "scim.resource_types_view", "scim.resource_type_view",
    "scim.schemas_view", "scim.schema_view", "scim.users_list", "scim.user", "scim.users_create",
    "scim.users_replace", "scim.users_patch", "scim.users_delete", "scim.groups_list",
    "scim.group", "scim.groups_create", "scim.groups_replace", "scim.groups_patch",
    "scim.groups_delete", "scim.unknown",
    # UDAP (idp/udap): the server's public metadata document.
    "udap.metadata",
}


def _url(app: Flask, rule: Rule) -> str:
    """The rule's path with a sample value for each variable (the gate runs before the view,
    so the value need not name anything that exists)."""
    values = {name: 1 if isinstance(converter, IntegerConverter) else "x"
              for name, converter in rule._converters.items()}  # noqa: SLF001
    return app.url_map.bind("localhost").build(rule.endpoint, values, method=next(
        iter(rule.methods or {"GET"})))


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, _url(app, rule)))
    return sorted(found)


def _counts() -> dict[str, int]:
    """Rows per table, the audit trail aside (a refused action is audited)."""
    return {table.name: db.session.execute(sa.select(sa.func.count()).select_from(table))
            .scalar_one() for table in db.metadata.sorted_tables
            if table.name not in ("audit_events", "audit_head")}


def _owe(user: User, gate: str, client) -> None:
    """Put the signed-in `user` into the state where `gate` is owed."""
    if gate == "acknowledgment":
        db.session.execute(sa.delete(Acknowledgment).where(Acknowledgment.user_id == user.id))
    elif gate == "temporary_password":
        user.must_change_password = True
        user.temporary_password_expires_at = clock.now() + timedelta(days=3)
    elif gate == "expired_password":
        user.password_changed_at = clock.now() - timedelta(
            days=policy().password.rules.max_age_days + 1)
    db.session.commit()


def _signed_in_owing(client, gate: str) -> User:
    user = make_user("gate.admin", npi=None, role="admin")
    assert login(client, "gate.admin").status_code == 302
    if gate == "not_me":
        # The real path: report, every session ends, sign in again: a new password is owed.
        page = client.get("/account/activity")
        done = client.post("/account/activity/not-me",
                           data={"csrf_token": csrf_from(page.text)})
        assert done.status_code == 200
        assert login(client, "gate.admin").status_code == 302
    else:
        _owe(user, gate, client)
    db.session.refresh(user)
    return user


def test_the_allow_list_is_the_reviewed_one():
    assert set(gates.ALLOW) == REVIEWED_ALLOW
    assert all(len(reason) > 20 for reason in gates.ALLOW.values())


@pytest.mark.parametrize("gate", ["acknowledgment", "temporary_password", "expired_password",
                                  "not_me"])
def test_every_route_is_gated(ctx, client, gate):
    user = _signed_in_owing(client, gate)
    routes = _routes(ctx)
    assert len(routes) > 80  # the whole map, not a part of it
    unguarded = []
    for endpoint, method, url in routes:
        if endpoint in gates.ALLOW:
            continue
        before = _counts() if method != "GET" else None
        response = client.open(url, method=method)
        location = urlsplit(response.headers.get("Location", "")).path
        if not (response.status_code in (302, 303) and location in GATE_PATHS) and \
                response.status_code not in (401, 403):
            unguarded.append(f"{method} {url} -> {response.status_code} {location}")
            continue
        if before is not None:
            db.session.rollback()
            assert _counts() == before, f"{method} {url} changed something"
    assert unguarded == []
    # The refused actions (not page views) were audited as bypass attempts.
    attempts = db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.event == "gate.bypass_refused", AuditEvent.user_id == user.id)).scalars().all()
    assert {e.detail["endpoint"] for e in attempts} >= {"admin.user_change_role",
                                                       "admin.client_new", "mfa.remove"}


def test_the_gate_sends_back_where_the_user_was_going(ctx, client):
    _signed_in_owing(client, "acknowledgment")
    response = client.get("/admin/clients")
    assert response.status_code == 302
    assert response.headers["Location"] == "/account/acknowledge?next=/admin/clients"
    page = client.get("/account/acknowledge?next=/admin/clients")
    done = client.post("/account/acknowledge", data={
        "acknowledge": "y", "next": "/admin/clients", "csrf_token": csrf_from(page.text)})
    assert done.headers["Location"] == "/admin/clients"
    # Control: with the step done the same routes answer (the walk above could fail).
    assert client.get("/admin/clients").status_code == 200
    assert client.get("/mfa/factors").status_code == 200


def test_an_admin_owing_a_password_change_cannot_change_roles(ctx, client):
    make_user("victim", npi=None)
    _signed_in_owing(client, "temporary_password")
    victim = db.session.execute(sa.select(User).where(User.username == "victim")).scalar_one()
    response = client.post(f"/admin/users/{victim.id}/role", data={"role": "admin"})
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/account/password/required"
    db.session.refresh(victim)
    assert victim.role == "physician"


def test_a_route_added_later_is_gated_without_saying_so(ctx, env, client):
    """A feature's new route, registered the ordinary way, is gated by default."""
    app = create_app(Settings.from_env(env), policy_overrides=TEST_POLICY)
    app.config["TESTING"] = True

    @app.get("/new-feature")
    def new_feature() -> str:
        return "reached"

    _signed_in_owing(client, "acknowledgment")
    browser = app.test_client()
    for cookie in client._cookies.values():  # noqa: SLF001 - the same browser, another node
        browser.set_cookie(cookie.key, cookie.value)
    response = browser.get("/new-feature")
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/account/acknowledge"


def test_anonymous_visitors_are_not_affected(client):
    assert client.get("/login").status_code == 200
    response = client.get("/admin/")
    assert response.status_code == 302 and urlsplit(
        response.headers["Location"]).path == "/login"
