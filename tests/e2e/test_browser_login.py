"""A person in headless Chromium (Playwright) against the IdP under gunicorn: the login page by
its labels, the second step with the code of an authenticator app (every login needs one), the
first sign-in of someone without one (QR code, key, first code, recovery codes), a replayed code
refused, the consent page for a third-party client, Allow and Deny, back to the RP.

The RP's redirect_uri is served by a tiny local http.server, so the browser really lands there.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Browser, Page, expect

from idp.context import policy
from idp.extensions import db
from tests.e2e.conftest import Person, Server, seed_client
from tests.helpers import PASSWORD, Rp, forget_totp_use, make_user, pkce

pytestmark = pytest.mark.e2e

SCOPE = "openid profile email npi"
SCREENSHOT = "/tmp/login.png"
MFA_SCREENSHOT = "/tmp/mfa-challenge.png"
ENROLL_SCREENSHOT = "/tmp/mfa-enroll-totp.png"
CODE_LABEL = "Code from your authenticator app"
CODE_FAILED = "That code is not right."


@contextmanager
def _tab(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A tab in a fresh browser context (no cookies: no SSO session carried over), and the
    list of problems the page reports."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda msg: problems.append(f"{msg.text} ({msg.location.get('url')})")
           if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        yield tab, problems
    finally:
        context.close()


@pytest.fixture
def expected_problems() -> list[str]:
    """Console messages a test expects (a form answered 400 on purpose), by substring."""
    return []


def _no_page_problems(problems: list[str], expected: list[str]) -> None:
    # CSP violations (inline script/style), failed loads and script errors show up here;
    # a missing /favicon.ico is the only thing tolerated, besides what the test expects.
    allowed = ["/favicon.ico)", *expected]
    assert not [p for p in problems if not any(a in p for a in allowed)], problems


@pytest.fixture
def page(browser: Browser, expected_problems: list[str]):
    with _tab(browser) as (tab, problems):
        yield tab
    _no_page_problems(problems, expected_problems)


@pytest.fixture
def second_page(browser: Browser, expected_problems: list[str]):
    """Someone else's browser (its own cookies), beside `page`."""
    with _tab(browser) as (tab, problems):
        yield tab
    _no_page_problems(problems, expected_problems)


def _third_party(rp_site) -> Rp:
    port = rp_site.server_address[1]
    return seed_client(first_party=False, name="Cardiology Scheduler", scope=SCOPE,
                       redirect_uri=f"http://127.0.0.1:{port}/cb")


def _authorize_url(server: Server, rp: Rp) -> tuple[str, dict]:
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": rp.client_id,
              "redirect_uri": rp.redirect_uri, "scope": SCOPE,
              "state": secrets.token_urlsafe(12), "nonce": secrets.token_urlsafe(12),
              "code_challenge": challenge, "code_challenge_method": "S256"}
    return server.url("/authorize?" + urlencode(params)), {**params, "verifier": verifier}


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _sign_in(page: Page, server: Server, url: str, identifier: str, password: str,
             screenshot: str | None = None) -> None:
    """Open the authorization URL and fill the login page; stops at the next page."""
    page.goto(url)
    assert page.url.startswith(server.url("/login?next=")), page.url
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)
    page.get_by_label("Username or NPI").fill(identifier)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def _second_step(page: Page, server: Server, code: str, screenshot: str | None = None) -> None:
    """The challenge after the password: the authenticator app's code, by its label."""
    page.wait_for_url(server.url("/mfa/challenge"))
    expect(page.get_by_role("heading", name="Verify it's you")).to_be_visible()
    field = page.get_by_label(CODE_LABEL)
    expect(field).to_have_attribute("autocomplete", "one-time-code")
    expect(field).to_be_focused()
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)
    field.fill(code)
    page.get_by_role("button", name="Verify").click()


def _sign_in_with_mfa(page: Page, server: Server, url: str, identifier: str, person: Person,
                      screenshot: str | None = None) -> str:
    """Password, then the code the person's app shows now; returns the code used. The factor
    forgets the step it used (test set-up): a test may sign the person in again within 30 s."""
    _sign_in(page, server, url, identifier, person.password, screenshot=screenshot)
    code = person.totp_now()
    _second_step(page, server, code, screenshot=MFA_SCREENSHOT if screenshot else None)
    page.wait_for_url(lambda u: not u.startswith(server.url("/mfa/")))
    forget_totp_use(person.username)
    return code


def _expect_consent(page: Page, server: Server, rp_name: str) -> None:
    expect(page.get_by_role("heading", name=f"{rp_name} wants to")).to_be_visible()
    assert page.url.startswith(server.url("/authorize?")), page.url
    wanted = [policy().scopes[s].description for s in SCOPE.split()]
    expect(page.locator("ul.scopes li")).to_have_text(wanted)


def _landed(page: Page, rp: Rp, rp_site) -> dict[str, str]:
    page.wait_for_url(rp.redirect_uri + "?*")
    expect(page.get_by_text("Back at the relying party.")).to_be_visible()
    parts = urlsplit(page.url)
    assert f"{parts.path}?{parts.query}" in rp_site.hits  # the RP really got the request
    return _query(page.url)


def _exchange(server: Server, rp: Rp, code: str, verifier: str) -> dict:
    response = requests.post(server.url("/token"), auth=(rp.client_id, rp.client_secret),
                             timeout=10, data={"grant_type": "authorization_code", "code": code,
                                               "redirect_uri": rp.redirect_uri,
                                               "code_verifier": verifier})
    assert response.status_code == 200, response.text
    return response.json()


def _id_token_claims(server: Server, id_token: str) -> dict:
    """The ID token's claims, its signature checked against the published JWKS."""
    meta = requests.get(server.url("/.well-known/openid-configuration"), timeout=10).json()
    keys = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    return jwt.decode(id_token, keys,
                      algorithms=meta["id_token_signing_alg_values_supported"]).claims


def _userinfo(server: Server, access_token: str) -> dict:
    response = requests.get(server.url("/userinfo"), timeout=10,
                            headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_sign_in_by_username_and_allow(idp_server: Server, person: Person, rp_site, page: Page):
    rp = _third_party(rp_site)
    url, asked = _authorize_url(idp_server, rp)
    _sign_in_with_mfa(page, idp_server, url, person.username, person, screenshot=SCREENSHOT)
    _expect_consent(page, idp_server, "Cardiology Scheduler")
    page.get_by_role("button", name="Allow").click()

    got = _landed(page, rp, rp_site)
    assert set(got) == {"code", "state", "iss"}
    assert got["state"] == asked["state"] and got["iss"] == idp_server.base
    token = _exchange(idp_server, rp, got["code"], asked["verifier"])
    assert _userinfo(idp_server, token["access_token"])["sub"] == person.subject

    # Consent is remembered: the same request again goes straight back to the RP.
    again, asked_again = _authorize_url(idp_server, rp)
    page.goto(again)
    got_again = _landed(page, rp, rp_site)
    assert got_again["state"] == asked_again["state"] and got_again["code"] != got["code"]


def test_sign_in_by_npi(idp_server: Server, person: Person, rp_site, page: Page):
    rp = _third_party(rp_site)
    url, asked = _authorize_url(idp_server, rp)
    _sign_in_with_mfa(page, idp_server, url, person.npi, person)
    _expect_consent(page, idp_server, "Cardiology Scheduler")
    page.get_by_role("button", name="Allow").click()

    got = _landed(page, rp, rp_site)
    assert got["state"] == asked["state"] and got["iss"] == idp_server.base
    token = _exchange(idp_server, rp, got["code"], asked["verifier"])
    claims = _userinfo(idp_server, token["access_token"])
    assert claims["sub"] == person.subject and claims["npi"] == person.npi
    assert claims["preferred_username"] == person.username


def test_deny_returns_access_denied(idp_server: Server, person: Person, rp_site, page: Page):
    rp = _third_party(rp_site)
    url, asked = _authorize_url(idp_server, rp)
    _sign_in_with_mfa(page, idp_server, url, person.username, person)
    _expect_consent(page, idp_server, "Cardiology Scheduler")
    page.get_by_role("button", name="Deny").click()

    got = _landed(page, rp, rp_site)
    assert got["error"] == "access_denied" and "code" not in got
    assert got["state"] == asked["state"] and got["iss"] == idp_server.base

    # Nothing was remembered: the next request asks again.
    page.goto(_authorize_url(idp_server, rp)[0])
    _expect_consent(page, idp_server, "Cardiology Scheduler")


def test_first_sign_in_enrolls_an_authenticator_app(idp_server: Server, rp_site, page: Page,
                                                    second_page: Page, ctx):
    """Someone without a second factor: the QR code and key, the first code, the recovery codes
    shown once, then on to the RP; the next sign-in asks for the app's code."""
    user = make_user("np.newcomer", npi=None, role="nurse_practitioner", totp=False)
    username, subject = user.username, user.subject
    db.session.commit()  # end the read transaction: SQLite writers in gunicorn must not wait
    rp = _third_party(rp_site)
    url, asked = _authorize_url(idp_server, rp)
    _sign_in(page, idp_server, url, username, PASSWORD)

    page.wait_for_url(idp_server.url("/mfa/enroll"))
    expect(page.get_by_role("heading", name="Set up a second way to sign in")).to_be_visible()
    page.get_by_role("link", name="Authenticator app").click()
    page.wait_for_url(idp_server.url("/mfa/enroll/totp"))
    expect(page.get_by_role("heading", name="Set up an authenticator app")).to_be_visible()
    expect(page.locator(".qr svg")).to_be_visible()  # drawn by the IdP, inline
    secret = page.locator("#totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
    page.screenshot(path=ENROLL_SCREENSHOT, full_page=True)
    page.get_by_label("Enter the 6-digit code the app shows").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Confirm").click()

    page.wait_for_url(idp_server.url("/mfa/recovery-codes?**"))
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    codes = page.locator("ul.recovery-codes li")
    expect(codes).to_have_count(policy().mfa.recovery_code_count)
    assert len(set(codes.all_inner_texts())) == policy().mfa.recovery_code_count
    page.get_by_role("link", name="I have saved my codes, continue").click()
    _expect_consent(page, idp_server, "Cardiology Scheduler")
    page.get_by_role("button", name="Allow").click()

    got = _landed(page, rp, rp_site)
    assert got["state"] == asked["state"] and got["iss"] == idp_server.base
    token = _exchange(idp_server, rp, got["code"], asked["verifier"])
    claims = _id_token_claims(idp_server, token["id_token"])
    assert claims["sub"] == subject and claims["nonce"] == asked["nonce"]
    assert claims["acr"] == "urn:healthidp:acr:aal2"
    assert claims["amr"] == ["pwd", "otp", "mfa"]

    # The codes were shown once: the page has nothing to show any more.
    page.goto(idp_server.url("/mfa/recovery-codes"))
    expect(page.locator("ul.recovery-codes")).to_have_count(0)

    # Next time (another browser): the password, then the new app's code; consent is kept.
    forget_totp_use(username)  # the enrollment used this 30 s step (test set-up only)
    again, asked_again = _authorize_url(idp_server, rp)
    _sign_in(second_page, idp_server, again, username, PASSWORD)
    _second_step(second_page, idp_server, pyotp.TOTP(secret).now())
    got_again = _landed(second_page, rp, rp_site)
    assert got_again["state"] == asked_again["state"]


def test_a_code_works_for_one_sign_in_only(idp_server: Server, person: Person, rp_site,
                                           page: Page, second_page: Page,
                                           expected_problems: list[str]):
    """A code seen over someone's shoulder (or typed into a phishing page) does not sign in a
    second browser, even within its 30 s; the app's next code does."""
    # The refused code's page comes with 400, which Chromium reports on the console.
    expected_problems.append(f"status of 400 (BAD REQUEST) ({idp_server.url('/mfa/challenge')})")
    rp = _third_party(rp_site)
    url, _ = _authorize_url(idp_server, rp)
    _sign_in(page, idp_server, url, person.username, person.password)
    code = person.totp_now()
    _second_step(page, idp_server, code)
    _expect_consent(page, idp_server, "Cardiology Scheduler")

    other, asked = _authorize_url(idp_server, rp)
    _sign_in(second_page, idp_server, other, person.username, person.password)
    _second_step(second_page, idp_server, code)
    expect(second_page.get_by_role("alert")).to_contain_text(CODE_FAILED)
    assert second_page.url == idp_server.url("/mfa/challenge")
    expect(second_page.get_by_label(CODE_LABEL)).to_be_visible()

    # One step ahead (a phone whose clock runs a little fast; inside the IdP's window).
    following = pyotp.TOTP(person.totp_secret).at(time.time() + 30)
    assert following != code
    second_page.get_by_label(CODE_LABEL).fill(following)
    second_page.get_by_role("button", name="Verify").click()
    _expect_consent(second_page, idp_server, "Cardiology Scheduler")
    second_page.get_by_role("button", name="Allow").click()
    assert _landed(second_page, rp, rp_site)["state"] == asked["state"]


def test_show_password_toggles_and_the_form_still_signs_in(idp_server: Server, person: Person,
                                                           page: Page):
    """The show-password button: a toggle (aria-pressed) that shows and hides the typed
    password; the field goes back to a password field when the form is sent (what password
    managers look for), and the sign-in works. axe on the page with the password shown."""
    from tests.e2e.axe import assert_accessible

    page.goto(idp_server.url("/login"))
    field = page.locator("#password")
    toggle = page.get_by_role("button", name="Show password")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    field.fill(person.password)
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(field).to_have_attribute("type", "text")
    assert_accessible(page, "login, password shown")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(field).to_have_attribute("type", "password")
    toggle.click()
    page.locator("#username").fill(person.username)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url("**/mfa/challenge")


def test_the_new_password_fields_have_one_toggle(idp_server: Server, person: Person,
                                                 page: Page):
    page.goto(idp_server.url("/login?next=/account/password"))
    page.locator("#username").fill(person.username)
    page.locator("#password").fill(person.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_label("Code from your authenticator app").fill(person.totp_now())
    page.get_by_role("button", name="Verify").click()
    forget_totp_use(person.username)
    page.wait_for_url("**/account/password")
    toggle = page.get_by_role("button", name="Show passwords")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#new_password")).to_have_attribute("type", "text")
    expect(page.locator("#confirm_password")).to_have_attribute("type", "text")
    expect(page.locator("#current_password")).to_have_attribute("type", "password")
