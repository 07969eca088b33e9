"""Spanish pages, messages and emails (issue 20): the language comes from Accept-Language
among web.toml's locales, English otherwise; <html lang> says which."""

import re

import pytest

from tests.helpers import PASSWORD, csrf_from, enroll_totp, make_user

ES = {"Accept-Language": "es-MX,es;q=0.9,en;q=0.5"}


def _lang(html: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', html)
    assert match, "page has no <html lang>"
    return match.group(1)


def test_spanish_login_page(ctx, client):
    page = client.get("/login", headers=ES)
    assert page.status_code == 200
    assert _lang(page.text) == "es"
    for text in ("Iniciar sesión", "Nombre de usuario o NPI", "Contraseña",
                 "¿Olvidó su contraseña?", "Saltar al contenido principal",
                 "Usar una llave de acceso"):
        assert text in page.text
    assert "Username or NPI" not in page.text and "Forgot password?" not in page.text


@pytest.mark.parametrize("header", [None, "en-US,en;q=0.9", "fr-FR,fr;q=0.9", "de, *;q=0.1"])
def test_english_otherwise(ctx, client, header):
    page = client.get("/login", headers={"Accept-Language": header} if header else {})
    assert _lang(page.text) == "en"
    assert "Username or NPI" in page.text and "Nombre de usuario" not in page.text


def test_preference_order_is_honoured(ctx, client):
    def lang_for(header: str) -> str:
        return _lang(client.get("/login", headers={"Accept-Language": header}).text)

    assert lang_for("en;q=0.4, es;q=0.8") == "es"
    assert lang_for("es;q=0.4, en;q=0.8") == "en"


def test_failed_sign_in_message_in_spanish(ctx, client):
    make_user()
    page = client.get("/login", headers=ES)
    response = client.post("/login", headers=ES, data={
        "username": "drsmith", "password": "not-the-password", "csrf_token": csrf_from(page.text)})
    assert response.status_code == 401
    assert "El nombre de usuario, el NPI o la contraseña no son correctos" in response.text
    assert "is not right" not in response.text


def test_mfa_challenge_in_spanish(ctx, client):
    user = make_user()
    enroll_totp(user)
    page = client.get("/login", headers=ES)
    response = client.post("/login", headers=ES, data={
        "username": "drsmith", "password": PASSWORD, "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302
    challenge = client.get("/mfa/challenge", headers=ES)
    assert _lang(challenge.text) == "es"
    assert "Verifique su identidad" in challenge.text
    assert "Código de su aplicación de autenticación" in challenge.text
    assert "Verify it" not in challenge.text


def test_reset_email_in_the_requesters_language(ctx, client, mailbox):
    user = make_user()
    page = client.get("/password/forgot", headers=ES)
    assert "Contraseña olvidada" in page.text
    sent = client.post("/password/forgot", headers=ES, data={
        "identifier": "drsmith", "csrf_token": csrf_from(page.text)})
    assert sent.status_code == 200 and "Revise su correo electrónico" in sent.text
    [message] = mailbox.to(user.email)
    assert message["Subject"] == "Restablezca su contraseña"
    body = mailbox.body(message)
    assert "Para elegir una contraseña nueva, abra este enlace" in body
    assert "/password/reset/" in body


def test_invalid_reset_link_page_in_spanish(ctx, client):
    page = client.get("/password/reset/not-a-token", headers=ES)
    assert page.status_code == 400 and _lang(page.text) == "es"
    assert "Este enlace de restablecimiento no se puede usar" in page.text


def test_policy_texts_in_spanish(ctx, client):
    """The daily acknowledgment and the factor labels come from policy files: shown translated."""
    from tests.helpers import login

    make_user(acknowledged=False)
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "es"
    assert login(client).status_code == 302
    page = client.get("/account/acknowledge")
    assert _lang(page.text) == "es"
    assert "Declaración diaria de seguridad" in page.text
    assert "Accederé a la información de los pacientes" in page.text
    assert "He leído y acepto la declaración anterior" in page.text
    accepted = client.post("/account/acknowledge", data={
        "acknowledge": "y", "next": "/mfa/factors", "csrf_token": csrf_from(page.text)})
    assert accepted.status_code == 302
    factors = client.get("/mfa/factors")
    assert _lang(factors.text) == "es"
    assert "(Aplicación de autenticación)" in factors.text


def test_staff_consoles_in_spanish(ctx, client):
    """The admin console, its users, alerts, verification, EPCS and report pages answer in
    the browser's language: Spanish text under lang="es", the nav included."""
    from tests.helpers import login

    make_user("root", npi=None, role="admin")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "es"
    assert login(client, "root").status_code == 302
    for path, text in (("/admin/", "Consola de administración"), ("/admin/users", "Usuarios"),
                       ("/admin/alerts", "Alertas de seguridad"),
                       ("/admin/clients/new", "Registrar un cliente"),
                       ("/admin/verifications", "Cola de verificación"),
                       ("/admin/epcs", "Permisos EPCS"), ("/admin/reports/", "Informes"),
                       ("/admin/audit", "Registro de auditoría")):
        page = client.get(path)
        assert page.status_code == 200, path
        assert _lang(page.text) == "es" and text in page.text, path
        assert "Panel" in page.text and "Skip to main content" not in page.text, path
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    page = client.get("/admin/")
    assert _lang(page.text) == "en" and "Admin console" in page.text


def test_sms_code_text_in_spanish(ctx, app):
    """The text message carrying a code is written in the language of the request."""
    from sqlalchemy import select

    from idp.extensions import db
    from idp.notify.models import SmsOutbox
    from tests.helpers import signed_in_browser

    make_user()
    http = signed_in_browser(app)
    http.environ_base["HTTP_ACCEPT_LANGUAGE"] = "es"
    page = http.get("/account/phone")
    assert "Cambiar número de teléfono" in page.text
    sent = http.post("/account/phone", data={
        "step": "request", "phone": "(202) 555-0123", "current_password": PASSWORD,
        "csrf_token": csrf_from(page.text)})
    assert sent.status_code == 200 and "Enviamos un código a" in sent.text
    body = db.session.execute(select(SmsOutbox.body).where(SmsOutbox.to == "+12025550123")
                              ).scalars().first()
    assert body and body.startswith("Su código de Provider Identity es ")
    assert "No lo comparta nunca" in body


def test_expired_form_page_in_spanish(ctx, client):
    refused = client.post("/login", headers=ES, data={"username": "x", "password": "y"})
    assert refused.status_code == 400 and _lang(refused.text) == "es"
    assert "Este formulario venció o no se envió desde este sitio" in refused.text
