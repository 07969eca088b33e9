"""An administrator in headless Chromium (Playwright) against the IdP under gunicorn: signs in
(password, then the authenticator app's code), opens the admin console and registers a new
OIDC client through the form; the secret is shown once and only its hash is stored. And every
console page, in English and in Spanish, passes axe-core (tests/e2e/axe.py)."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from idp.core.crypto import digest
from idp.extensions import db
from idp.oidc.models import Client
from idp.saml import registry as saml_registry
from tests.e2e.axe import assert_accessible, crawl
from tests.e2e.conftest import Person, Server, seed_client
from tests.helpers import PASSWORD, TOTP_SECRETS, forget_totp_use, make_user
from tests.integration.saml_sp import SamlTestSp, make_keypair

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


def _console_sign_in(page: Page, server: Server, admin: Person, labels: dict[str, str]) -> None:
    page.goto(server.url("/login?next=/admin/"))
    page.get_by_label(labels["user"]).fill(admin.username)
    page.get_by_label(labels["password"], exact=True).fill(admin.password)
    page.get_by_role("button", name=labels["sign_in"], exact=True).click()
    page.get_by_label(labels["code"]).fill(pyotp.TOTP(admin.totp_secret).now())
    page.get_by_role("button", name=labels["verify"]).click()
    page.wait_for_url(server.url("/admin/"))
    forget_totp_use(admin.username)


ENGLISH = {"user": "Username or NPI", "password": "Password", "sign_in": "Sign in",
           "code": "Code from your authenticator app", "verify": "Verify",
           "console": "Admin console", "locked": "Locked accounts", "register": "Register client",
           "problem": "There is a problem", "alert": "Unusual sign-in"}
SPANISH = {"user": "Nombre de usuario o NPI", "password": "Contraseña",
           "sign_in": "Iniciar sesión", "code": "Código de su aplicación de autenticación",
           "verify": "Verificar", "console": "Consola de administración",
           "locked": "Cuentas bloqueadas", "register": "Registrar cliente",
           "problem": "Hay un problema", "alert": "Inicio de sesión inusual"}


@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_admin_page_passes_axe(idp_server: Server, admin: Person, ctx, browser: Browser,
                                     lang: str, tmp_path):
    """The whole console as an administrator meets it, in English and in Spanish: the
    dashboard counts what waits, every page reachable from it (three clicks deep: clients,
    users, a user, audit, alerts, reports, verifications, facilities, EPCS, SMS outbox) says
    its language and has no WCAG 2.1 A/AA violation, and a refused client form puts the
    focus on its error summary."""
    from idp import clock
    from idp.security.alerts import raise_alert

    text = ENGLISH if lang == "en" else SPANISH
    suffix = lang
    locked = make_user(f"locked.{suffix}", npi=None)
    locked.locked_until = clock.now() + timedelta(minutes=30)
    raise_alert("unusual_sign_in", user_id=locked.id, detail={
        "reasons": ["new_device", "new_network"], "sid": "x" * 16, "network": "198.51.100.0/24",
        "ip": "198.51.100.7", "city": "Springfield", "country": "United States",
        "user_agent": "Mozilla/5.0 (Macintosh) Firefox/133.0"})
    pending = seed_client(name=f"Self-registered {suffix}")
    client = db.session.execute(select(Client).where(Client.client_id == pending.client_id)
                                ).scalar_one()
    client.pending_scope, client.pending_since = "patient/*.read", clock.now()
    key, cert = make_keypair(tmp_path, f"axe-{lang}")  # a SAML application on /admin/saml
    saml_registry.register(SamlTestSp(f"https://axe-{lang}.example/saml", key, cert,
                                      base=f"https://axe-{lang}.example", encrypts=True
                                      ).metadata(),
                           name=f"Scribe {lang}", nameid_format=None, metadata_url=None,
                           actor="test")
    db.session.commit()

    context = browser.new_context(locale="es-ES" if lang == "es" else "en-US")
    context.set_default_timeout(10_000)
    page = context.new_page()
    _console_sign_in(page, idp_server, admin, text)
    expect(page.locator("html")).to_have_attribute("lang", lang)
    expect(page.get_by_role("heading", level=1)).to_have_text(text["console"])
    tile = page.locator(".tiles a", has_text=text["locked"])
    assert int(tile.locator(".count").inner_text()) >= 1
    nav = page.get_by_role("navigation", name=text["console"])
    assert nav.get_by_role("link").count() >= 10  # every console page, SMS outbox too

    seen = crawl(page, page.url, idp_server.url("/admin"), lang=lang)
    assert len(seen) >= 12, sorted(seen)
    for path in ("/admin/clients", "/admin/users", "/admin/alerts", "/admin/audit",
                 "/admin/reports/", "/admin/verifications", "/admin/facilities", "/admin/epcs",
                 "/admin/sms-outbox", "/admin/clients/new", f"/admin/users/{locked.id}",
                 "/admin/saml"):
        assert idp_server.url(path) in seen, path

    page.goto(idp_server.url("/admin/alerts"))
    row = page.locator("tr[data-kind=unusual_sign_in]", has_text=f"locked.{suffix}")
    expect(row).to_contain_text(text["alert"])
    expect(row).to_contain_text("198.51.100.7 (Springfield, United States)")

    page.goto(idp_server.url("/admin/clients/new"))
    page.get_by_role("button", name=text["register"]).click()
    expect(page.locator("#error-summary")).to_be_focused()
    expect(page.locator("#error-summary")).to_contain_text(text["problem"])
    expect(page.locator("#client_name")).to_have_attribute("aria-invalid", "true")
    assert_accessible(page, f"client form errors ({lang})")
    context.close()
