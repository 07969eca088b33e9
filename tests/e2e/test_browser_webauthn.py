"""WebAuthn in headless Chromium against the IdP under gunicorn, with Chromium's virtual
authenticator (CDP WebAuthn domain) standing in for a platform authenticator with a
fingerprint reader: enrollment, password + authenticator, passkey without a password,
step-up to aal2-phr, and a user-verification failure that signs nobody in.

RP ID and origin: the IdP's RP ID is its issuer's host, and Chromium refuses an IP address as
RP ID ("SecurityError: This is an invalid domain"), so this module runs its own gunicorn with
IDP_ISSUER=http://localhost:PORT (bound to 127.0.0.1; Chromium resolves localhost to loopback
itself and treats it as a secure context). The shared `idp_server` (http://127.0.0.1:PORT)
cannot host WebAuthn.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from idp.accounts.models import User
from idp.config import PROJECT_ROOT
from idp.extensions import db
from idp.mfa.models import Factor
from tests.e2e.conftest import Server
from tests.helpers import PASSWORD, TOTP_SECRETS, Rp, make_client, make_user, pkce

pytestmark = pytest.mark.e2e

SCOPE = "openid profile"
AAL2 = "urn:healthidp:acr:aal2"
PHR = "urn:healthidp:acr:aal2-phr"
START_TIMEOUT = 30.0
AUTHENTICATOR = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                 "hasUserVerification": True, "isUserVerified": True,
                 "automaticPresenceSimulation": True}


# -- the IdP under gunicorn, named localhost -----------------------------------------------
Idp = Server  # the issuer is http://localhost:PORT here (WebAuthn needs a domain)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def idp(app, env: dict[str, str], workdir: Path):
    port = _free_port()
    server = Idp(f"http://localhost:{port}", workdir / "gunicorn-webauthn")
    server.log_dir.mkdir(exist_ok=True)
    child_env = {**os.environ, **env, "IDP_ISSUER": server.base, "IDP_LOG_FORMAT": "json"}
    child_env.pop("IDP_PROXY_HOPS", None)
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
           "--no-control-socket", "--graceful-timeout", "5", "idp.wsgi:app"]
    with open(server.log_dir / "gunicorn.stdout", "wb") as out, \
            open(server.log_dir / "gunicorn.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=child_env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
    try:
        deadline, last = time.monotonic() + START_TIMEOUT, "no answer"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited with {proc.returncode}:\n{server.stderr()}",
                            pytrace=False)
            try:
                ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json().get("status") == "ready":
                    break
                last = f"{ready.status_code} {ready.text[:200]}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn not ready in {START_TIMEOUT}s ({last}):\n"
                            f"{server.stderr()}", pytrace=False)
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    assert "unhandled" not in server.full_log(), server.stderr()


# -- the relying party's redirect_uri, and the browser --------------------------------------
@dataclass
class Tab:
    page: Page
    cdp: object
    authenticator: str
    problems: list[str]
    refusals_expected: bool = False  # the test makes the IdP answer 4xx on purpose

    def credentials(self) -> list[dict]:
        return self.cdp.send("WebAuthn.getCredentials",
                             {"authenticatorId": self.authenticator})["credentials"]

    def user_verified(self, value: bool) -> None:
        self.cdp.send("WebAuthn.setUserVerified", {"authenticatorId": self.authenticator,
                                                   "isUserVerified": value})


@pytest.fixture
def tab(browser: Browser):
    """A fresh browser context with a virtual platform authenticator (fingerprint: user
    verification succeeds until the test says otherwise)."""
    context = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"{msg.text} ({msg.location.get('url')})")
            if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    made = Tab(page, cdp, added["authenticatorId"], problems)
    yield made
    context.close()
    # No CSP violation, script error or failed load; a request the test has the IdP refuse on
    # purpose shows up as "the server responded with a status of 4xx".
    unexpected = [p for p in problems if "/favicon.ico)" not in p and not (
        made.refusals_expected and "the server responded with a status of 40" in p)]
    assert not unexpected, problems


@dataclass(frozen=True)
class Person:
    username: str
    subject: str
    totp_secret: str


@pytest.fixture
def doctor(ctx) -> Person:
    user = make_user()
    found = Person(user.username, user.subject, TOTP_SECRETS[user.username])
    db.session.commit()  # end the read transaction: SQLite writers in gunicorn must not wait
    return found


def _client(rp_site) -> Rp:
    rp = make_client(scope=SCOPE, first_party=True,
                     redirect_uri=f"http://127.0.0.1:{rp_site.server_address[1]}/cb")
    db.session.commit()
    return rp


# -- steps ---------------------------------------------------------------------------------
def _authorize_url(idp: Idp, rp: Rp, **extra: str) -> tuple[str, dict]:
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": rp.client_id,
              "redirect_uri": rp.redirect_uri, "scope": SCOPE,
              "state": secrets.token_urlsafe(12), "nonce": secrets.token_urlsafe(12),
              "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    return idp.url("/authorize?" + urlencode(params)), {**params, "verifier": verifier}


def _password(page: Page, person: Person) -> None:
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    page.get_by_label("Username or NPI").fill(person.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def _totp(page: Page, idp: Idp, person: Person) -> None:
    page.wait_for_url(idp.url("/mfa/challenge*"))
    if page.get_by_label("Code from your authenticator app").count() == 0:
        page.get_by_role("link", name="Test app").click()  # WebAuthn is offered first
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(person.totp_secret).now())
    page.get_by_role("button", name="Verify").click()


def _enroll(tab: Tab, idp: Idp, person: Person) -> None:
    """Password + authenticator app, then add the platform authenticator within the
    re-authentication window; end on the recovery-codes page."""
    page = tab.page
    page.goto(idp.url("/login?next=/mfa/enroll/webauthn"))
    _password(page, person)
    _totp(page, idp, person)
    expect(page.get_by_role("heading", name="Add a security key or biometrics")).to_be_visible()
    page.get_by_label("Name for this key (optional)").fill("Work laptop")
    page.get_by_role("button", name="Add security key or biometrics").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    [credential] = tab.credentials()
    assert credential["isResidentCredential"]  # usable as a passkey
    db.session.rollback()
    factor = db.session.execute(select(Factor).join(User).where(
        User.username == person.username, Factor.kind == "webauthn")).scalar_one()
    assert factor.label == "Work laptop" and factor.user_verified and not factor.clone_warning
    assert factor.credential_id == credential["credentialId"].rstrip("=").replace(
        "+", "-").replace("/", "_")
    db.session.commit()


def _landed(page: Page, rp: Rp, rp_site) -> dict[str, str]:
    page.wait_for_url(rp.redirect_uri + "?*")
    expect(page.get_by_text("Back at the relying party.")).to_be_visible()
    parts = urlsplit(page.url)
    assert f"{parts.path}?{parts.query}" in rp_site.hits
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


def _id_token(idp: Idp, rp: Rp, got: dict, asked: dict) -> dict:
    assert got["state"] == asked["state"] and got["iss"] == idp.base
    response = requests.post(idp.url("/token"), auth=(rp.client_id, rp.client_secret),
                             timeout=10, data={"grant_type": "authorization_code",
                                               "code": got["code"],
                                               "redirect_uri": rp.redirect_uri,
                                               "code_verifier": asked["verifier"]})
    assert response.status_code == 200, response.text
    keys = KeySet.import_key_set(requests.get(idp.url("/jwks.json"), timeout=10).json())
    claims = jwt.decode(response.json()["id_token"], keys).claims
    assert claims["iss"] == idp.base and claims["nonce"] == asked["nonce"]
    return claims


def _signed_out(page: Page, idp: Idp) -> None:
    """No SSO session in this browser: the account page sends it to the login page."""
    assert not [c for c in page.context.cookies() if c["name"] == "idp_session"]
    page.goto(idp.url("/account"))
    page.wait_for_url(idp.url("/login?**"))


# -- tests ---------------------------------------------------------------------------------
def test_enroll_then_password_and_authenticator(idp: Idp, doctor: Person, rp_site, tab: Tab):
    rp = _client(rp_site)
    _enroll(tab, idp, doctor)
    tab.page.context.clear_cookies()

    url, asked = _authorize_url(idp, rp)
    tab.page.goto(url)
    _password(tab.page, doctor)
    tab.page.wait_for_url(idp.url("/mfa/challenge"))
    tab.page.get_by_role("button", name="Use security key or biometrics").click()
    claims = _id_token(idp, rp, _landed(tab.page, rp, rp_site), asked)
    assert claims["sub"] == doctor.subject
    assert claims["acr"] == PHR
    assert {"pwd", "hwk", "user", "mfa"} <= set(claims["amr"]) and "otp" not in claims["amr"]
    assert tab.credentials()[0]["signCount"] >= 2  # the IdP saw the counter move


def test_passkey_without_password(idp: Idp, doctor: Person, rp_site, tab: Tab):
    rp = _client(rp_site)
    _enroll(tab, idp, doctor)
    tab.page.context.clear_cookies()

    url, asked = _authorize_url(idp, rp)
    tab.page.goto(url)
    expect(tab.page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    tab.page.get_by_role("button", name="Use a passkey").click()  # no username, no password
    claims = _id_token(idp, rp, _landed(tab.page, rp, rp_site), asked)
    assert claims["sub"] == doctor.subject
    assert claims["acr"] == PHR and claims["amr"] == ["hwk", "user"]


def test_step_up_to_phishing_resistant(idp: Idp, doctor: Person, rp_site, tab: Tab):
    rp = _client(rp_site)
    _enroll(tab, idp, doctor)  # the session now: password + authenticator app

    url, asked = _authorize_url(idp, rp)
    tab.page.goto(url)
    first = _id_token(idp, rp, _landed(tab.page, rp, rp_site), asked)
    assert first["acr"] == AAL2 and "hwk" not in first["amr"]

    url, asked = _authorize_url(idp, rp, acr_values=PHR)
    tab.page.goto(url)
    tab.page.wait_for_url(idp.url("/mfa/challenge"))
    expect(tab.page.get_by_role("heading", name="This action needs a stronger sign-in")
           ).to_be_visible()
    expect(tab.page.get_by_label("Code from your authenticator app")).to_have_count(0)
    tab.page.get_by_role("button", name="Use security key or biometrics").click()
    claims = _id_token(idp, rp, _landed(tab.page, rp, rp_site), asked)
    assert claims["sub"] == doctor.subject and claims["acr"] == PHR
    assert {"otp", "hwk"} <= set(claims["amr"])


# A client that drops user verification from the options (userVerification "discouraged")
# and sends what the authenticator returns: the IdP itself must refuse it.
TAMPERED = """async ([optionsUrl, verifyUrl, body]) => {
  const buf = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')
                                          + '==='.slice((s.length + 3) % 4)), c => c.charCodeAt(0));
  const b64 = (b) => btoa(String.fromCharCode(...new Uint8Array(b)))
      .replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
  const headers = {'Content-Type': 'application/json',
                   'X-CSRFToken': document.querySelector('input[name=csrf_token]').value};
  const post = (url, data) => fetch(url, {method: 'POST', headers, body: JSON.stringify(data)});
  const options = await (await post(optionsUrl, body)).json();
  options.challenge = buf(options.challenge);
  options.allowCredentials = options.allowCredentials.map(c => ({...c, id: buf(c.id)}));
  options.userVerification = 'discouraged';
  const cred = await navigator.credentials.get({publicKey: options});
  const flags = new Uint8Array(cred.response.authenticatorData)[32];
  const answer = await post(verifyUrl, {credential: {
    id: cred.id, rawId: b64(cred.rawId), type: cred.type, clientExtensionResults: {},
    response: {clientDataJSON: b64(cred.response.clientDataJSON),
               authenticatorData: b64(cred.response.authenticatorData),
               signature: b64(cred.response.signature),
               userHandle: cred.response.userHandle ? b64(cred.response.userHandle) : null}}});
  return {flags, status: answer.status, body: await answer.json()};
}"""


def _failed_logins(username: str) -> int:
    db.session.rollback()
    count = db.session.execute(select(User.failed_logins).where(User.username == username)
                               ).scalar_one()
    db.session.commit()
    return count


def test_user_verification_failure_signs_nobody_in(idp: Idp, doctor: Person, rp_site,
                                                   tab: Tab):
    rp = _client(rp_site)
    _enroll(tab, idp, doctor)
    tab.page.context.clear_cookies()
    tab.user_verified(False)  # the fingerprint no longer matches
    tab.refusals_expected = True
    hits = len(rp_site.hits)

    # Second factor: the authenticator cannot verify the user, nothing is sent or signed in.
    url, _ = _authorize_url(idp, rp)
    tab.page.goto(url)
    _password(tab.page, doctor)
    tab.page.wait_for_url(idp.url("/mfa/challenge"))
    tab.page.get_by_role("button", name="Use security key or biometrics").click()
    expect(tab.page.get_by_role("alert")).to_contain_text("could not verify you")
    assert tab.page.url == idp.url("/mfa/challenge")

    # A client that asks the authenticator not to verify: the IdP refuses the assertion
    # and counts a failed sign-in.
    result = tab.page.evaluate(TAMPERED, ["/mfa/webauthn/options", "/mfa/webauthn/verify", {}])
    assert result["flags"] & 0x04 == 0  # UV bit clear: what the IdP was sent
    assert result["status"] == 400 and "could not be verified" in result["body"]["error"]
    assert _failed_logins(doctor.username) == 1

    # Passkey sign-in: refused in the browser and, tampered with, by the IdP.
    tab.page.goto(idp.url("/login"))
    tab.page.get_by_role("button", name="Use a passkey").click()
    expect(tab.page.get_by_role("alert")).to_contain_text("could not verify you")
    passkey = tab.page.evaluate(TAMPERED, ["/mfa/passkey/options", "/mfa/passkey/verify",
                                           {"next": "/account"}])
    assert passkey["flags"] & 0x04 == 0
    assert passkey["status"] == 400 and "could not be verified" in passkey["body"]["error"]
    assert _failed_logins(doctor.username) == 2

    _signed_out(tab.page, idp)
    assert len(rp_site.hits) == hits  # the RP got nothing
