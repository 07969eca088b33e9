"""Credentials in headless Chromium (Playwright) against the IdP under gunicorn: a temporary
password replaced at first sign-in, then the daily acknowledgment, back at the relying party;
and "Forgot password" with the link that really arrived over SMTP.

The RP's redirect_uri is served by a tiny local http.server, so the browser really lands there.
"""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from idp.context import policy
from idp.extensions import db
from tests.e2e.conftest import Person, Server, seed_client
from tests.helpers import Rp, make_user, pkce, totp_now

pytestmark = pytest.mark.e2e

SCOPE = "openid profile email"
TEMPORARY = "Temporary-Birch-Signal-64!"
CHOSEN = "Granite-Orchid-Velvet-93?"


@pytest.fixture
def page(browser: Browser):
    context = browser.new_context()
    context.set_default_timeout(10_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda msg: problems.append(f"{msg.text} ({msg.location.get('url')})")
           if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    yield tab
    context.close()
    # a failed POST answers 4xx on purpose below; only script/CSP errors count here
    assert not [p for p in problems if "/favicon.ico)" not in p and "status of 4" not in p], \
        problems


@pytest.fixture
def temporary_user(ctx) -> Person:
    """Created with a temporary password and no acknowledgment yet, as after approval."""
    user = make_user("np.rivera", npi=None, role="nurse_practitioner", password=TEMPORARY,
                     temporary=True, acknowledged=False)
    found = Person(user.username, user.npi, user.subject, TEMPORARY, user.email)
    db.session.commit()  # end the read transaction: SQLite writers in gunicorn must not wait
    return found


def _first_party(rp_site) -> Rp:
    port = rp_site.server_address[1]
    return seed_client(first_party=True, name="Provider Portal", scope=SCOPE,
                       redirect_uri=f"http://127.0.0.1:{port}/cb")


def _authorize_url(server: Server, rp: Rp) -> tuple[str, dict]:
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": rp.client_id,
              "redirect_uri": rp.redirect_uri, "scope": SCOPE,
              "state": secrets.token_urlsafe(12), "nonce": secrets.token_urlsafe(12),
              "code_challenge": challenge, "code_challenge_method": "S256"}
    return server.url("/authorize?" + urlencode(params)), {**params, "verifier": verifier}


def _sign_in(page: Page, identifier: str, password: str) -> None:
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username or NPI").fill(identifier)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def _second_factor(page: Page, username: str) -> None:
    expect(page.get_by_role("heading", name="Verify it's you")).to_be_visible()
    page.get_by_label("Code from your authenticator app").fill(totp_now(username))
    page.get_by_role("button", name="Verify").click()


def _new_password(page: Page, password: str) -> None:
    page.get_by_label("New password", exact=True).fill(password)
    page.get_by_label("Confirm new password", exact=True).fill(password)
    for name in ("new_password", "confirm_password"):
        assert page.locator(f'input[name="{name}"]').get_attribute("autocomplete") == \
            "new-password"
    page.get_by_role("button", name="Save password").click()


def _mail_to(mailbox, address: str, subject: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in mailbox.to(address) if m["Subject"] == subject]
        if found:
            return found[-1]
        time.sleep(0.1)
    pytest.fail(f"no email {subject!r} reached {address} over SMTP", pytrace=False)


def test_temporary_password_then_acknowledgment_then_back_to_the_rp(
        idp_server: Server, temporary_user: Person, rp_site, page: Page, mailbox):
    rp = _first_party(rp_site)
    url, asked = _authorize_url(idp_server, rp)
    page.goto(url)
    assert page.url.startswith(idp_server.url("/login?next=")), page.url
    _sign_in(page, temporary_user.username, TEMPORARY)
    _second_factor(page, temporary_user.username)

    # forced change: the temporary password cannot be kept, a weak one is refused
    expect(page.get_by_role("heading", name="Set a new password")).to_be_visible()
    assert page.url.startswith(idp_server.url("/account/password/required")), page.url
    _new_password(page, TEMPORARY)
    expect(page.get_by_role("alert")).to_contain_text("last 12")
    _new_password(page, CHOSEN)

    # the daily acknowledgment, by its label
    expect(page.get_by_role("heading", name=policy().acknowledgment.title)).to_be_visible()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_be_visible()  # not ticked: refused
    page.get_by_label("I have read and accept the statement above").check()
    page.get_by_role("button", name="Continue").click()

    page.wait_for_url(rp.redirect_uri + "?*")
    expect(page.get_by_text("Back at the relying party.")).to_be_visible()
    parts = urlsplit(page.url)
    assert f"{parts.path}?{parts.query}" in rp_site.hits
    got = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert got["state"] == asked["state"] and got["iss"] == idp_server.base
    response = requests.post(idp_server.url("/token"), auth=(rp.client_id, rp.client_secret),
                             timeout=10, data={"grant_type": "authorization_code",
                                               "code": got["code"],
                                               "redirect_uri": rp.redirect_uri,
                                               "code_verifier": asked["verifier"]})
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["id_token"] and tokens["access_token"]
    info = requests.get(idp_server.url("/userinfo"), timeout=10,
                        headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 200 and info.json()["sub"] == temporary_user.subject
    _mail_to(mailbox, temporary_user.email, "Your password was changed")


def test_forgot_password_link_from_the_email(idp_server: Server, person: Person, page: Page,
                                            mailbox):
    page.goto(idp_server.url("/login"))
    page.get_by_role("link", name="Forgot password").click()
    expect(page.get_by_role("heading", name="Forgot password")).to_be_visible()
    page.get_by_label("Username, NPI or email address").fill(person.npi)
    page.get_by_role("button", name="Email me a reset link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

    message = _mail_to(mailbox, person.email, "Reset your password")
    body = message.get_body(preferencelist=("plain",)).get_content()
    link = re.search(re.escape(idp_server.base) + r"/password/reset/[A-Za-z0-9_-]+", body)
    assert link, body
    page.goto(link.group(0))
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    _new_password(page, "weak")
    expect(page.get_by_role("alert")).to_contain_text("at least 12")
    _new_password(page, CHOSEN)
    expect(page.get_by_role("heading", name="Password changed")).to_be_visible()
    _mail_to(mailbox, person.email, "Your password was changed")

    # the link is spent
    page.goto(link.group(0))
    expect(page.get_by_role("heading", name="This reset link cannot be used")).to_be_visible()

    page.goto(idp_server.url("/login"))
    _sign_in(page, person.username, person.password)  # the old password no longer works
    expect(page.get_by_role("alert")).to_be_visible()
    _sign_in(page, person.username, CHOSEN)
    _second_factor(page, person.username)
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    assert page.url == idp_server.url("/account")
