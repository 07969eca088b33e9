"""An administrator in headless Chromium (Playwright) against the IdP under gunicorn: signs in
(password, then the authenticator app's code), opens the admin console and registers a new
OIDC client through the form; the secret is shown once and only its hash is stored."""

from __future__ import annotations

import pyotp
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from idp.core.crypto import digest
from idp.extensions import db
from idp.oidc.models import Client
from tests.e2e.conftest import Person
from tests.helpers import PASSWORD, TOTP_SECRETS, make_user

pytestmark = pytest.mark.e2e



@pytest.fixture
def admin(ctx) -> Person:
    user = make_user("it.admin", npi=None, role="admin")
    found = Person(user.username, None, user.subject, PASSWORD, user.email,
                   TOTP_SECRETS[user.username])
    db.session.commit()
    return found


def test_admin_registers_a_client_in_the_console(idp_server, admin, ctx, browser):
    problems: list[str] = []
    context = browser.new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"{m.text} ({m.location.get('url')})")
            if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    page.goto(idp_server.url("/admin/clients/new"))
    assert page.url.startswith(idp_server.url("/login?")), page.url
    page.get_by_label("Username or NPI").fill(admin.username)
    page.get_by_label("Password").fill(admin.password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(admin.totp_secret).now())
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name="Register a client")).to_be_visible()

    page.get_by_label("Name", exact=True).fill("Pharmacy portal")
    page.get_by_label("Redirect URIs (one per line)", exact=True).fill(
        "https://pharmacy.example/cb\nhttp://127.0.0.1:8123/cb")
    page.get_by_label("Post-logout redirect URIs (one per line)").fill(
        "https://pharmacy.example/bye")
    page.get_by_label("Back-channel logout URI").fill("https://pharmacy.example/bcl")
    page.get_by_label("Scopes (space-separated)").fill("openid profile email npi")
    page.get_by_label("Token endpoint authentication").select_option("client_secret_post")
    page.get_by_label("First party (no consent page)").check()
    page.get_by_role("button", name="Register client").click()

    expect(page.get_by_role("heading", name="Client registered")).to_be_visible()
    client_id = page.locator("#client-id").inner_text()
    secret = page.locator("#client-secret").inner_text()
    page.screenshot(path="/tmp/admin-client-registered.png", full_page=True)

    # a rule is enforced in the browser too: an http redirect URI on a real host
    page.goto(idp_server.url("/admin/clients/new"))
    page.get_by_label("Name", exact=True).fill("Bad")
    page.get_by_label("Redirect URIs (one per line)", exact=True).fill("http://evil.example/cb")
    page.get_by_role("button", name="Register client").click()
    expect(page.get_by_role("alert")).to_contain_text("must use https")

    page.goto(idp_server.url("/admin/clients"))
    expect(page.get_by_role("link", name="Pharmacy portal")).to_be_visible()
    context.close()

    db.session.rollback()
    row = db.session.execute(select(Client).where(Client.client_id == client_id)).scalar_one()
    assert row.client_secret_hash == digest(secret)
    assert row.token_endpoint_auth_method == "client_secret_post" and row.first_party
    assert row.redirect_uris == ["https://pharmacy.example/cb", "http://127.0.0.1:8123/cb"]
    assert row.backchannel_logout_uri == "https://pharmacy.example/bcl"
    # the refused form answered 400 on purpose; a missing favicon is tolerated
    assert [p for p in problems if "/favicon.ico)" not in p
            and not ("400" in p and "/admin/clients/new" in p)] == [], problems
