"""response_mode=form_post in Chromium: after the sign-in the IdP's page submits the
authorization response as a POST to the relying party by itself (its own script, allowed by
the page's CSP, no inline script), and the code is never in a URL the browser shows."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode

import pytest
import requests
from playwright.sync_api import Browser, expect

from tests.e2e.conftest import Person, Server, seed_client
from tests.e2e.test_browser_login import _no_page_problems, _sign_in_with_mfa, _tab
from tests.helpers import pkce

pytestmark = pytest.mark.e2e


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        self.server.posts.append({k: v[0] for k, v in parse_qs(
            self.rfile.read(length).decode()).items()})
        body = b"<!doctype html><title>RP</title><p>Posted to the relying party.</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rp_receiver() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    httpd.posts = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_form_post_response_reaches_the_relying_party(idp_server: Server, person: Person,
                                                      rp_receiver, browser: Browser):
    port = rp_receiver.server_address[1]
    rp = seed_client(redirect_uri=f"http://127.0.0.1:{port}/cb", name="Form post RP",
                     scope="openid profile email")
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    url = idp_server.url("/authorize?" + urlencode({
        "response_type": "code", "client_id": rp.client_id, "redirect_uri": rp.redirect_uri,
        "scope": "openid profile email", "state": state, "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge, "code_challenge_method": "S256",
        "response_mode": "form_post"}))
    with _tab(browser) as (page, problems):
        seen: list[str] = []
        page.on("framenavigated", lambda frame: seen.append(frame.url))
        _sign_in_with_mfa(page, idp_server, url, person.username, person)
        page.wait_for_url(rp.redirect_uri)
        expect(page.get_by_text("Posted to the relying party.")).to_be_visible()
    _no_page_problems(problems, [])  # a CSP refusal of the script or the submit shows here
    [posted] = rp_receiver.posts
    assert posted["state"] == state and posted["iss"] == idp_server.base
    assert not [u for u in seen if "code=" in u], seen  # never in an address
    token = requests.post(idp_server.url("/token"), auth=(rp.client_id, rp.client_secret),
                          timeout=10, data={"grant_type": "authorization_code",
                                            "code": posted["code"],
                                            "redirect_uri": rp.redirect_uri,
                                            "code_verifier": verifier})
    assert token.status_code == 200, token.text
