"""A person in headless Chromium (Playwright) against the IdP under gunicorn: the login page by
its labels, the consent page for a third-party client, Allow and Deny, back to the RP.

The RP's redirect_uri is served by a tiny local http.server, so the browser really lands there.
"""

from __future__ import annotations

import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from idp.context import policy
from tests.e2e.conftest import Person, Server, seed_client
from tests.helpers import Rp, pkce

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCOPE = "openid profile email npi"
SCREENSHOT = "/tmp/login.png"


class _Callback(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.hits.append(self.path)
        body = b"<!doctype html><title>RP</title><p>Back at the relying party.</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def rp_site():
    """The relying party's redirect_uri, really served on loopback; records what arrives."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - any launch failure fails the test
            pytest.fail(f"Chromium did not start from {CHROMIUM}: {exc}", pytrace=False)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser):
    context = browser.new_context()  # fresh cookies per test: no SSO session carried over
    context.set_default_timeout(10_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda msg: problems.append(f"{msg.text} ({msg.location.get('url')})")
           if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    yield tab
    context.close()
    # CSP violations (inline script/style), failed loads and script errors show up here;
    # a missing /favicon.ico is the only thing tolerated.
    assert not [p for p in problems if "/favicon.ico)" not in p], problems


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
    page.goto(url)
    assert page.url.startswith(server.url("/login?next=")), page.url
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)
    page.get_by_label("Username or NPI").fill(identifier)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


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


def _userinfo(server: Server, access_token: str) -> dict:
    response = requests.get(server.url("/userinfo"), timeout=10,
                            headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_sign_in_by_username_and_allow(idp_server: Server, person: Person, rp_site, page: Page):
    rp = _third_party(rp_site)
    url, asked = _authorize_url(idp_server, rp)
    _sign_in(page, idp_server, url, person.username, person.password, screenshot=SCREENSHOT)
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
    _sign_in(page, idp_server, url, person.npi, person.password)
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
    _sign_in(page, idp_server, url, person.username, person.password)
    _expect_consent(page, idp_server, "Cardiology Scheduler")
    page.get_by_role("button", name="Deny").click()

    got = _landed(page, rp, rp_site)
    assert got["error"] == "access_denied" and "code" not in got
    assert got["state"] == asked["state"] and got["iss"] == idp_server.base

    # Nothing was remembered: the next request asks again.
    page.goto(_authorize_url(idp_server, rp)[0])
    _expect_consent(page, idp_server, "Cardiology Scheduler")
