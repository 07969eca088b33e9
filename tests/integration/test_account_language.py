"""The account's language (issue 20, migration 0100): chosen on the settings page, it comes
before Accept-Language on the pages once signed in, writes the mails and texts to the account,
and is released as the OIDC `locale` claim (profile scope) for the relying parties. The
relying party's `ui_locales` on /authorize chooses the sign-in pages' language."""

from __future__ import annotations

import base64
import json
import re

import pytest
from sqlalchemy import select

from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.notify.models import SmsOutbox
from tests.helpers import (
    PASSWORD,
    authorize,
    csrf_from,
    exchange,
    get_code,
    make_client,
    make_user,
    signed_in_browser,
)

EN = {"Accept-Language": "en-US,en;q=0.9"}


def _lang(html: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', html)
    assert match, "page has no <html lang>"
    return match.group(1)


def _choose(http, language: str, **headers: str):
    page = http.get("/account/settings", headers=headers or EN)
    return http.post("/account/language", headers=headers or EN, data={
        "language": language, "csrf_token": csrf_from(page.text)})


def _user(username: str = "drsmith") -> User:
    return db.session.execute(select(User).where(User.username == username)).scalar_one()


def test_the_settings_page_offers_the_languages(signed_in):
    page = signed_in.get("/account/settings", headers=EN)
    assert page.status_code == 200
    assert '<select id="language" name="language"' in page.text
    assert '<option value="es" lang="es">Español</option>' in page.text
    assert '<option value="en" lang="en">English</option>' in page.text
    assert 'aria-describedby="language-hint"' in page.text


def test_spanish_chosen_comes_before_the_browsers_language(signed_in):
    saved = _choose(signed_in, "es")
    assert saved.status_code == 302 and saved.headers["Location"].endswith("/account/settings")
    assert _user().language == "es"
    [event] = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "account.language_changed")).scalars().all()
    assert event.user_id == _user().id
    page = signed_in.get("/account/settings", headers=EN)  # an English browser
    assert _lang(page.text) == "es"
    assert "Se guardó su idioma." in page.text and "Configuración de la cuenta" in page.text
    assert '<option value="es" lang="es" selected>' in page.text
    for path, text in (("/account", "Su cuenta"), ("/mfa/factors", "Métodos de inicio")):
        other = signed_in.get(path, headers=EN)
        assert _lang(other.text) == "es" and text in other.text, path

    # Back to "the browser's": the English browser gets English again.
    assert _choose(signed_in, "").status_code == 302
    assert _user().language is None
    page = signed_in.get("/account/settings", headers=EN)
    assert _lang(page.text) == "en" and "Account settings" in page.text


def test_english_chosen_comes_before_a_spanish_browser(signed_in):
    assert _choose(signed_in, "en").status_code == 302
    page = signed_in.get("/account/settings", headers={"Accept-Language": "es"})
    assert _lang(page.text) == "en" and "Account settings" in page.text


@pytest.mark.parametrize("value", ["fr", "ES", "es-MX", "x" * 5000, "<script>"])
def test_a_language_not_offered_is_refused_plainly(signed_in, value):
    refused = _choose(signed_in, value)
    assert refused.status_code == 400
    assert "Choose one of the languages listed." in refused.text
    assert 'aria-invalid="true"' in refused.text and "<script>" not in refused.text
    assert _user().language is None


def test_a_nul_character_is_refused_before_the_view(signed_in):
    refused = _choose(signed_in, "es\x00")
    assert refused.status_code == 400 and "NUL character" in refused.text
    assert _user().language is None


def test_the_language_needs_a_session_and_a_csrf_token(ctx, client, signed_in):
    assert signed_in.post("/account/language", data={"language": "es"}).status_code == 400
    assert _user().language is None
    anonymous = client.application.test_client()
    answer = anonymous.post("/account/language", data={"language": "es"})
    assert answer.status_code in (302, 400) and _user().language is None
    assert signed_in.get("/account/language").status_code == 405


def test_mails_and_texts_to_the_account_in_its_language(ctx, app, mailbox):
    """An English browser, a Spanish account: the password-changed notice and the text
    message with a code are in Spanish; the page itself follows the account too."""
    user = make_user()
    user.language = "es"
    db.session.commit()
    http = signed_in_browser(app)
    http.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    page = http.get("/account/phone")
    assert _lang(page.text) == "es"
    sent = http.post("/account/phone", data={
        "step": "request", "phone": "(202) 555-0123", "current_password": PASSWORD,
        "csrf_token": csrf_from(page.text)})
    assert sent.status_code == 200
    body = db.session.execute(select(SmsOutbox.body).where(SmsOutbox.to == "+12025550123")
                              ).scalars().first()
    assert body and body.startswith("Su código de Provider Identity es ")

    new = "Harbor-Lantern-Quill-58?"
    form = http.get("/account/password")
    changed = http.post("/account/password", data={
        "current_password": PASSWORD, "new_password": new, "confirm_password": new,
        "csrf_token": csrf_from(form.text)})
    assert changed.status_code == 302
    [notice] = mailbox.to(user.email)
    assert notice["Subject"] == "Se cambió su contraseña"
    assert "Hello" not in mailbox.body(notice)


def test_a_sign_in_code_by_text_follows_the_account_not_the_browser(ctx, app):
    """The code sent during sign-in (no session yet): the account's language."""
    from datetime import timedelta

    from idp import clock
    from idp.mfa.factors import otp_code
    from idp.mfa.models import Factor, LoginAttempt

    user = make_user()
    user.language = "es"
    now = clock.now()
    factor = Factor(user_id=user.id, kind="sms", destination="+12025550199",
                    label="phone", created_at=now, confirmed_at=now)
    db.session.add(factor)
    db.session.flush()
    attempt = LoginAttempt(id="attempt-language-1", user_id=user.id, purpose="login",
                           created_at=now, expires_at=now + timedelta(minutes=5))
    db.session.add(attempt)
    db.session.commit()
    with app.test_request_context("/mfa/challenge", headers=EN):
        result = otp_code.send(factor, attempt)
        assert result.sent and result.message.startswith("We sent a code")  # the page: en
    db.session.commit()
    body = db.session.execute(select(SmsOutbox.body).where(SmsOutbox.to == "+12025550199")
                              ).scalars().one()
    assert body.startswith("Su código de Provider Identity es ")


def _id_token_claims(response) -> dict:
    token = response.get_json()["id_token"]
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_the_locale_claim_is_released_with_the_profile_scope(ctx, app):
    rp = make_client(scope="openid profile email")
    user = make_user()
    http = signed_in_browser(app)
    code, verifier, _ = get_code(http, rp, scope="openid profile")
    assert "locale" not in _id_token_claims(exchange(http, rp, code, verifier))  # not set

    user.language = "es"
    db.session.commit()
    code, verifier, _ = get_code(http, rp, scope="openid profile")
    tokens = exchange(http, rp, code, verifier)
    assert _id_token_claims(tokens)["locale"] == "es"
    info = http.get("/userinfo", headers={
        "Authorization": f"Bearer {tokens.get_json()['access_token']}"}).get_json()
    assert info["locale"] == "es"

    code, verifier, _ = get_code(http, rp, scope="openid email")  # no profile: no locale
    assert "locale" not in _id_token_claims(exchange(http, rp, code, verifier))


def test_discovery_lists_the_ui_locales_offered(client):
    config = client.get("/.well-known/openid-configuration").get_json()
    assert config["ui_locales_supported"] == ["en", "es"]
    assert "locale" in config["claims_supported"]


def test_ui_locales_chooses_the_sign_in_pages_language(ctx, client):
    rp = make_client()
    make_user()
    asked, _ = authorize(client, rp, "x" * 43, ui_locales="fr-CA es-MX en")
    assert asked.status_code == 302 and "/login" in asked.headers["Location"]
    page = client.get(asked.headers["Location"], headers=EN)
    assert _lang(page.text) == "es" and "Iniciar sesión" in page.text


@pytest.mark.parametrize("value", ["fr de", "", "x" * 10_000, "\x00", "es" + " x" * 500])
def test_ui_locales_not_offered_or_garbage_changes_nothing(ctx, client, value):
    rp = make_client()
    asked, _ = authorize(client, rp, "x" * 43, ui_locales=value)
    assert asked.status_code < 500
    page = client.get("/login", headers=EN)
    expected = "es" if value.startswith("es ") else "en"
    assert _lang(page.text) == expected
