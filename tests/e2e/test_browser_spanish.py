"""The sign-in journey and the account pages in Spanish, in headless Chromium with a Spanish
locale (its Accept-Language): every page says lang="es", reads Spanish, and axe-core finds no
WCAG 2.1 A/AA violation (tests/e2e/axe.py), error states included."""

from __future__ import annotations

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from idp.extensions import db
from tests.e2e.axe import assert_accessible
from tests.e2e.conftest import Person, Server
from tests.helpers import PASSWORD, forget_totp_use, make_user, totp_now

pytestmark = pytest.mark.e2e


def _spanish(page: Page, heading: str, what: str) -> None:
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.locator("h1")).to_contain_text(heading)
    assert_accessible(page, f"{what} (es)")


@pytest.fixture
def tab(browser: Browser):
    context = browser.new_context(locale="es-ES")
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def _password_step(page: Page, server: Server, username: str, password: str) -> None:
    page.goto(server.url("/login"))
    _spanish(page, "Iniciar sesión", "login")
    page.get_by_label("Nombre de usuario o NPI").fill(username)
    page.get_by_label("Contraseña").fill(password)
    page.get_by_role("button", name="Iniciar sesión").click()


def test_sign_in_journey_and_account_pages_in_spanish(idp_server: Server, person: Person,
                                                      tab: Page):
    page = tab
    _password_step(page, idp_server, person.username, "not-the-password")
    expect(page.locator("#login-error")).to_contain_text("no son correctos")
    _spanish(page, "Iniciar sesión", "login error")

    _password_step(page, idp_server, person.username, person.password)
    page.wait_for_url("**/mfa/challenge")
    _spanish(page, "Verifique su identidad", "MFA challenge")
    page.get_by_label("Código de su aplicación de autenticación").fill("000000")
    page.get_by_role("button", name="Verificar").click()
    expect(page.locator("#challenge-error")).to_be_visible()
    _spanish(page, "Verifique su identidad", "MFA challenge error")
    page.get_by_label("Código de su aplicación de autenticación").fill(person.totp_now())
    page.get_by_role("button", name="Verificar").click()
    page.wait_for_url("**/account")
    forget_totp_use(person.username)
    _spanish(page, "Su cuenta", "account")

    for path, heading in (("/account/settings", "Configuración de la cuenta"),
                          ("/account/activity", "Actividad de la cuenta"),
                          ("/account/sessions", "Dispositivos con sesión iniciada"),
                          ("/account/password", "Cambiar contraseña"),
                          ("/account/email", "Cambiar correo electrónico"),
                          ("/account/phone", "Cambiar número de teléfono"),
                          ("/mfa/factors", "Métodos de inicio de sesión"),
                          ("/mfa/enroll", "Configure un segundo método de inicio de sesión"),
                          ("/mfa/enroll/totp", "Configure una aplicación de autenticación"),
                          ("/mfa/enroll/sms", "Configure códigos por mensaje de texto"),
                          ("/mfa/enroll/email", "Configure códigos por correo electrónico"),
                          ("/mfa/enroll/webauthn", "Agregar una llave de seguridad o biometría")):
        page.goto(idp_server.url(path))
        _spanish(page, heading, path)
    page.goto(idp_server.url("/account/password"))
    page.get_by_label("Contraseña actual").fill(PASSWORD)
    page.get_by_label("Contraseña nueva", exact=True).fill("short")
    page.get_by_label("Confirme la contraseña nueva").fill("short")
    page.get_by_role("button", name="Cambiar contraseña").click()
    expect(page.locator("#password-errors")).to_contain_text("No se cambió la contraseña")
    _spanish(page, "Cambiar contraseña", "password change error")


def test_enrolment_and_public_pages_in_spanish(ctx, idp_server: Server, tab: Page):
    make_user("nuevo", npi=None, totp=False)
    db.session.commit()
    page = tab
    _password_step(page, idp_server, "nuevo", PASSWORD)
    page.wait_for_url("**/mfa/enroll**")
    _spanish(page, "Configure un segundo método de inicio de sesión", "MFA enrolment")
    page.goto(idp_server.url("/mfa/enroll/totp"))
    _spanish(page, "Configure una aplicación de autenticación", "TOTP enrolment")
    secret = page.locator("#totp-secret").inner_text()
    page.get_by_label("Introduzca el código de 6 dígitos que muestra la aplicación").fill("000000")
    page.get_by_role("button", name="Confirmar").click()
    expect(page.get_by_role("alert")).to_contain_text("no coincide")
    _spanish(page, "Configure una aplicación de autenticación", "TOTP enrolment error")
    page.get_by_label("Introduzca el código de 6 dígitos que muestra la aplicación").fill(
        pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Confirmar").click()
    _spanish(page, "Sus códigos de recuperación", "recovery codes")
    forget_totp_use("nuevo")

    public = tab.context.new_page()  # same browser; the public pages need no sign-in
    for path, heading in (("/password/forgot", "Contraseña olvidada"),
                          ("/password/reset/not-a-token", "no se puede usar"),
                          ("/onboarding/apply", "Registro de nuevos proveedores")):
        public.goto(idp_server.url(path))
        _spanish(public, heading, path)
    public.goto(idp_server.url("/onboarding/apply"))
    public.get_by_role("button", name="Enviar solicitud").click()
    expect(public.locator("#error-summary")).to_contain_text("requieren su atención")
    _spanish(public, "Registro de nuevos proveedores", "registration errors")


def _new_password(page: Page, password: str) -> None:
    page.get_by_label("Contraseña nueva", exact=True).fill(password)
    page.get_by_label("Confirme la contraseña nueva").fill(password)
    page.get_by_role("button", name="Guardar contraseña").click()


def test_forced_password_change_and_acknowledgment_in_spanish(ctx, idp_server: Server,
                                                               tab: Page):
    """A first sign-in with a temporary password, as after approval: the forced change and the
    daily acknowledgment, each also with its error, in Spanish."""
    temporary, chosen = "Temporal-Abedul-Senal-64!", "Granito-Orquidea-Terciopelo-93?"
    make_user("enf.garcia", npi=None, role="nurse_practitioner", password=temporary,
              temporary=True, acknowledged=False)
    db.session.commit()  # end the read transaction: SQLite writers in gunicorn must not wait
    page = tab
    _password_step(page, idp_server, "enf.garcia", temporary)
    page.wait_for_url("**/mfa/challenge")
    page.get_by_label("Código de su aplicación de autenticación").fill(totp_now("enf.garcia"))
    page.get_by_role("button", name="Verificar").click()
    page.wait_for_url("**/account/password/required**")
    forget_totp_use("enf.garcia")
    _spanish(page, "Establezca una contraseña nueva", "forced password change")
    expect(page.get_by_text("Inició sesión con una contraseña temporal")).to_be_visible()
    _new_password(page, temporary)  # the temporary one cannot stay
    expect(page.locator("#password-errors")).to_contain_text("Esta contraseña no se puede usar")
    expect(page.locator("#password-errors")).to_be_focused()
    _spanish(page, "Establezca una contraseña nueva", "forced password change error")
    _new_password(page, chosen)

    page.wait_for_url("**/account/acknowledge**")
    _spanish(page, "Declaración diaria de seguridad", "acknowledgment")
    expect(page.locator(".ack-text")).to_contain_text("información de los pacientes")
    page.get_by_role("button", name="Continuar").click()
    expect(page.locator("#acknowledge-error")).to_have_text("Marque la casilla para continuar.")
    expect(page.locator("#acknowledge-error")).to_be_focused()
    expect(page.locator("#acknowledge")).to_have_attribute("aria-invalid", "true")
    _spanish(page, "Declaración diaria de seguridad", "acknowledgment error")
    page.get_by_label("He leído y acepto la declaración anterior").check()
    page.get_by_role("button", name="Continuar").click()
    page.wait_for_url("**/account")
    _spanish(page, "Su cuenta", "account after the acknowledgment")


def test_consent_and_logout_in_spanish(idp_server: Server, person: Person, rp_site, tab: Page):
    import secrets
    from urllib.parse import urlencode

    from tests.e2e.conftest import seed_client
    from tests.helpers import pkce

    page = tab
    rp = seed_client(first_party=False, name="Cardiology Scheduler", scope="openid profile email",
                     redirect_uri=f"http://127.0.0.1:{rp_site.server_address[1]}/cb")
    _verifier, challenge = pkce()
    page.goto(idp_server.url("/authorize?" + urlencode({
        "response_type": "code", "client_id": rp.client_id, "redirect_uri": rp.redirect_uri,
        "scope": "openid profile email", "state": secrets.token_urlsafe(12),
        "code_challenge": challenge, "code_challenge_method": "S256"})))
    _spanish(page, "Iniciar sesión", "login (authorize)")
    page.get_by_label("Nombre de usuario o NPI").fill(person.username)
    page.get_by_label("Contraseña").fill(person.password)
    page.get_by_role("button", name="Iniciar sesión").click()
    page.wait_for_url("**/mfa/challenge")
    page.get_by_label("Código de su aplicación de autenticación").fill(person.totp_now())
    page.get_by_role("button", name="Verificar").click()
    forget_totp_use(person.username)
    _spanish(page, "Cardiology Scheduler solicita permiso para", "consent")
    expect(page.locator("ul.scopes li").first).to_have_text(
        "iniciar su sesión e indicar a la aplicación quién es usted")
    page.get_by_role("button", name="Denegar").click()
    page.wait_for_url(rp.redirect_uri + "?*")
    assert "error=access_denied" in page.url

    page.goto(idp_server.url("/logout"))
    _spanish(page, "¿Cerrar sesión?", "logout confirmation")
    page.get_by_role("button", name="Cerrar sesión").click()
    _spanish(page, "Ha cerrado sesión", "signed out")
    expect(page.get_by_role("link", name="Volver a iniciar sesión")).to_be_visible()


@pytest.mark.parametrize(("locale", "lang", "label", "verify"), [
    ("en-US", "en", "Code sent by text message to", "Verify"),
    ("es-ES", "es", "Código enviado por mensaje de texto a", "Verificar")])
def test_text_message_challenge_passes_axe(ctx, idp_server: Server, browser: Browser,
                                           locale: str, lang: str, label: str, verify: str):
    """The challenge for a text-message code, as sent and after a wrong code, in English and
    in Spanish: lang right, no WCAG 2.1 A/AA violation."""
    import re

    from idp import clock
    from idp.mfa.models import Factor

    user = make_user(f"sms.{lang}", npi=None, totp=False)
    db.session.add(Factor(user_id=user.id, kind="sms", label="Phone", created_at=clock.now(),
                          confirmed_at=clock.now(), destination="+12025550123"))
    db.session.commit()
    context = browser.new_context(locale=locale)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(idp_server.url("/login"))
    page.locator("#username").fill(user.username)
    page.locator("#password").fill(PASSWORD)
    page.locator("form button[type=submit]").first.click()
    page.wait_for_url("**/mfa/challenge")
    code = page.get_by_label(re.compile(label))
    expect(code).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", lang)
    assert_accessible(page, f"MFA challenge: text-message code ({lang})")
    code.fill("000000")
    page.get_by_role("button", name=verify, exact=True).click()
    expect(page.locator("#challenge-error")).to_be_focused()
    assert_accessible(page, f"MFA challenge: wrong text-message code ({lang})")
    context.close()
