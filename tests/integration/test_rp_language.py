"""The portal and the EHR in Spanish (issue 20): the signed-in user's `locale` claim (the
account's language at the IdP) comes first, then Accept-Language, then English; <html lang>
says which; the RPs send that language to the IdP as ui_locales."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from clients.ehr.scopes import ACR_AAL2
from tests.conftest import TEST_ISSUER
from tests.integration.test_ehr_step_up import access_token
from tests.rp_helpers import RoutedIdp, make_rp, sign_in

ES = {"Accept-Language": "es-ES,es;q=0.9"}
ISS = quote(TEST_ISSUER, safe="")
EN = {"Accept-Language": "en-US,en;q=0.9"}


def _lang(html: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', html)
    assert match, "page has no <html lang>"
    return match.group(1)


@pytest.fixture
def portal(ctx, app, tmp_path):
    return make_rp("portal", tmp_path / "portal-state", RoutedIdp(app))


@pytest.fixture
def ehr(ctx, app, tmp_path):
    return make_rp("ehr", tmp_path / "ehr-state", RoutedIdp(app))


def _with_locale(http, locale: str | None) -> None:
    with http.session_transaction() as session:
        session["user"] = {**session["user"], "locale": locale}


@pytest.mark.parametrize("name", ["portal", "ehr"])
def test_the_welcome_page_follows_the_browser(ctx, app, tmp_path, name):
    rp = make_rp(name, tmp_path / name, RoutedIdp(app))
    http = rp.test_client()
    http.get("/")  # the EHR tries a silent sign-in once; the second visit shows the page
    spanish = http.get("/", headers=ES)
    assert spanish.status_code == 200 and _lang(spanish.text) == "es"
    assert "Iniciar sesión" in spanish.text and "Saltar al contenido principal" in spanish.text
    assert "Sign in" not in spanish.text
    english = http.get("/", headers=EN)
    assert _lang(english.text) == "en" and "Sign in" in english.text
    other = http.get("/", headers={"Accept-Language": "fr-FR,de;q=0.5"})
    assert _lang(other.text) == "en"


def test_the_locale_claim_comes_before_the_browser(portal):
    http = portal.test_client()
    sign_in(http, sub="sub-1", sid="sid-1")
    _with_locale(http, "es")
    page = http.get("/", headers=EN)  # an English browser, a Spanish account
    assert _lang(page.text) == "es"
    assert "Le damos la bienvenida, Ana Smith" in page.text and "Médico/a" in page.text
    assert "Abrir el EHR" in page.text and "Cerrar sesión" in page.text
    assert "No se puede conectar con el EHR en este momento." in page.text  # no EHR here
    _with_locale(http, "en")
    page = http.get("/", headers=ES)
    assert _lang(page.text) == "en" and "Welcome, Ana Smith" in page.text


@pytest.mark.parametrize("claim", [None, "fr", "", "x" * 300, 42])
def test_a_locale_not_offered_falls_back_to_the_browser(portal, claim):
    http = portal.test_client()
    sign_in(http, sub="sub-1", sid="sid-1")
    _with_locale(http, claim)
    assert _lang(http.get("/", headers=ES).text) == "es"
    assert _lang(http.get("/", headers=EN).text) == "en"


def test_the_ehrs_pages_in_spanish(ehr):
    http = ehr.test_client()
    sign_in(http, sub="sub-1", sid="sid-1",
            access_token=access_token(acr=ACR_AAL2, scope="openid profile ehr.patients.read"))
    _with_locale(http, "es")
    patients = http.get("/", headers=EN)
    assert patients.status_code == 200 and _lang(patients.text) == "es"
    assert "<h1>Pacientes</h1>" in patients.text and "Fecha de nacimiento" in patients.text
    sign = http.get("/prescriptions/sign", headers=EN)
    assert _lang(sign.text) == "es" and "Firmar la receta" in sign.text
    assert "Firmar requiere un inicio de sesión más seguro" in sign.text  # step-up said


def test_sign_in_asks_the_idp_for_the_same_language(portal):
    http = portal.test_client()
    to_idp = http.get("/login", headers=ES)
    assert to_idp.status_code == 302
    assert parse_qs(urlsplit(to_idp.headers["Location"]).query)["ui_locales"] == ["es"]
    to_idp = http.get("/login", headers=EN)
    assert parse_qs(urlsplit(to_idp.headers["Location"]).query)["ui_locales"] == ["en"]


def test_the_callback_keeps_the_locale_claim(portal, monkeypatch):
    """What the callback keeps of the ID token: the locale when it names a language offered
    (the token exchange itself is Authlib's, tested end to end in tests/e2e)."""
    client = portal.extensions["rp.client"]
    monkeypatch.setattr(client, "authorize_access_token", lambda: {
        "access_token": "at", "expires_at": 9_999_999_999, "id_token": "it",
        "userinfo": {"sub": "sub-9", "name": "Rosa Díaz", "locale": "es-MX", "roles": []}})
    http = portal.test_client()
    assert http.get(f"/callback?code=c&state=s&iss={ISS}").status_code == 302
    with http.session_transaction() as session:
        assert session["user"]["locale"] == "es"
    monkeypatch.setattr(client, "authorize_access_token", lambda: {
        "access_token": "at", "expires_at": 9_999_999_999, "id_token": "it",
        "userinfo": {"sub": "sub-9", "locale": "<script>", "roles": []}})
    assert http.get(f"/callback?code=c&state=s&iss={ISS}").status_code == 302
    with http.session_transaction() as session:
        assert session["user"]["locale"] is None


def test_errors_in_spanish(portal):
    http = portal.test_client()
    expired = http.post("/logout", headers=ES)  # no CSRF token
    assert expired.status_code == 400 and _lang(expired.text) == "es"
    assert "Este formulario ha caducado" in expired.text
    refused = http.get(f"/callback?error=access_denied&state=unknown&iss={ISS}", headers=ES)
    assert refused.status_code == 400 and "Se canceló el inicio de sesión." in refused.text
    forged = http.get("/callback?code=c&state=s&iss=https%3A%2F%2Fevil.example", headers=ES)
    assert forged.status_code == 400
    assert "no procede de nuestro proveedor de identidad" in forged.text
