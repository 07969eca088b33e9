"""`python -m clients.devstack` as a developer runs it (`make run`), on free ports with its own
instance dir, keys and database: sign in at the portal (password, then the code of the
authenticator app whose key the banner prints), single sign-on into the EHR, the EHR API's token,
scope and role checks, and logout ending the IdP session and, over the back-channel, the other
application's session."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
import requests
import sqlalchemy as sa

from idp.accounts.models import User
from idp.accounts.npi import npi_with_check_digit
from idp.config import PROJECT_ROOT
from idp.mfa.models import Factor

pytestmark = pytest.mark.e2e

START_TIMEOUT = 120.0
STOP_TIMEOUT = 45.0
# Settings of the developer's shell that would point the stack elsewhere.
STRIP = ("IDP_ISSUER", "IDP_SECRET_KEY", "IDP_PROXY_HOPS", "EHR_AUDIENCE", "EHR_API",
         "PORTAL_URL", "EHR_URL", "PORTAL_CLIENT_ID", "PORTAL_CLIENT_SECRET", "EHR_CLIENT_ID",
         "EHR_CLIENT_SECRET", "PORTAL_SECRET_KEY", "EHR_SECRET_KEY", "SMTP_HOST", "SMTP_PORT",
         "MAILBOX_DIR", "MAILBOX_PORT", "MAILBOX_SMTP_PORT")
URL_LINE = re.compile(
    r"^\s+(IdP|Portal|EHR|SMART|Mail)\s+(http://(?:127\.0\.0\.1|localhost):\d+)\s*$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    process: subprocess.Popen
    instance: Path
    database: str
    lines: list[str] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def output(self) -> str:
        return "".join(self.lines)[-8000:]

    def _saved(self, username: str) -> dict[str, str]:
        return json.loads((self.instance / "demo-accounts.json").read_text())[username]

    def password(self, username: str) -> str:
        return self._saved(username)["password"]

    def totp_secret(self, username: str) -> str:
        """The key of the account's authenticator app (what the banner tells a person)."""
        return self._saved(username)["totp_secret"]

    def forget_totp_use(self, username: str) -> None:
        """helpers.forget_totp_use for the stack's own database (test set-up only): the next
        sign-in within the same 30 s may use the same code again."""
        users, factors = User.__table__, Factor.__table__
        engine = sa.create_engine(self.database)
        try:
            with engine.begin() as conn:
                conn.execute(sa.update(factors).where(factors.c.user_id == sa.select(
                    users.c.id).where(users.c.username == username).scalar_subquery())
                    .values(last_totp_step=None))
        finally:
            engine.dispose()


def _database(tmp: Path) -> tuple[str, str | None]:
    """A private SQLite file, or a private schema in DATABASE_URL's PostgreSQL."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        return f"sqlite:///{tmp / 'devstack.sqlite3'}", None
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    schema = f"devstack_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}", schema


def _drop_schema(schema: str) -> None:
    url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def _read(stack: Stack, ready: threading.Event) -> None:
    assert stack.process.stdout is not None
    for line in stack.process.stdout:  # drain to the end: a full pipe would block the stack
        stack.lines.append(line)
        found = URL_LINE.match(line)
        if found:
            stack.urls[found.group(1)] = found.group(2)
        if "Press Ctrl-C to stop" in line:
            ready.set()
    ready.set()


def _stop(stack: Stack) -> int:
    proc = stack.process
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher's own session
        proc.wait(timeout=10)
        pytest.fail(f"the stack did not stop on SIGTERM:\n{stack.output}", pytrace=False)


def _port_closed(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parts.hostname, parts.port)) != 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("devstack")) as running:
        yield running


@contextmanager
def running_stack(tmp: Path, idp_host: str = "localhost",
                  extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """`python -m clients.devstack` on free ports, every app on http://localhost:PORT as
    `make run` starts them (WebAuthn needs a host name as RP ID); `idp_host` "127.0.0.1" names
    the IdP by its address instead; `extra_env` (e.g. IDP_POLICY_DIR) is added last."""
    database, schema = _database(tmp)
    ports = {"IDP_PORT": free_port(), "PORTAL_PORT": free_port(), "EHR_PORT": free_port(),
             "SMART_APP_PORT": free_port(), "MAILBOX_PORT": free_port(),
             "MAILBOX_SMTP_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if k not in STRIP}
    env.update({k: str(v) for k, v in ports.items()})
    env.update(IDP_INSTANCE_DIR=str(tmp / "instance"), IDP_KEYS_DIR=str(tmp / "keys"),
               DATABASE_URL=database, PYTHONUNBUFFERED="1")
    env.update(extra_env or {})
    if idp_host != "localhost":
        env["IDP_ISSUER"] = f"http://{idp_host}:{ports['IDP_PORT']}"
    proc = subprocess.Popen([sys.executable, "-m", "clients.devstack"], cwd=PROJECT_ROOT,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    running = Stack(proc, tmp / "instance", database)
    ready = threading.Event()
    reader = threading.Thread(target=_read, args=(running, ready), daemon=True)
    reader.start()
    try:
        if not ready.wait(START_TIMEOUT) or proc.poll() is not None:
            pytest.fail(f"the stack did not come up (exit {proc.poll()}):\n{running.output}",
                        pytrace=False)
        expected = {f"http://{idp_host if p == 'IDP_PORT' else 'localhost'}:{ports[p]}"
                    for p in ports if p != "MAILBOX_SMTP_PORT"}
        assert set(running.urls.values()) == expected, running.output
        yield running
    finally:
        status = _stop(running)
        reader.join(timeout=10)
        if schema:
            _drop_schema(schema)
    assert status == 0, running.output
    for url in running.urls.values():
        assert _port_closed(url), f"{url} still answers after the stack stopped"
    assert "Traceback" not in running.output and "unhandled" not in running.output, \
        running.output


# -- the browser's side, over plain HTTP -------------------------------------------------------
def _form_field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', page)
    assert found, f"no {name} field in:\n{page[:1500]}"
    return html.unescape(found.group(1))


def sign_in(http: requests.Session, stack: Stack, login_page: requests.Response,
            username: str) -> requests.Response:
    """Fill the IdP's login form with the account's password, the second step with the code
    of its authenticator app, and the daily acknowledgment when it is asked for; follow the
    redirects back to the relying party."""
    idp = stack.urls["IdP"]
    assert login_page.url.startswith(f"{idp}/login?"), login_page.url
    challenge = http.post(f"{idp}/login", timeout=20, data={
        "username": username, "password": stack.password(username),
        "csrf_token": _form_field(login_page.text, "csrf_token"),
        "next": _form_field(login_page.text, "next")})
    assert challenge.status_code == 200 and challenge.url == f"{idp}/mfa/challenge", \
        f"{challenge.url}\n{challenge.text[:1500]}"
    assert "Code from your authenticator app" in challenge.text, challenge.text[:1500]
    response = http.post(challenge.url, timeout=20, data={
        "code": pyotp.TOTP(stack.totp_secret(username)).now(),
        "csrf_token": _form_field(challenge.text, "csrf_token")})
    stack.forget_totp_use(username)  # the same account signs in again in the next test
    if response.url.startswith(f"{idp}/account/acknowledge"):
        response = http.post(response.url.split("?")[0], timeout=20, data={
            "acknowledge": "y", "csrf_token": _form_field(response.text, "csrf_token"),
            "next": _form_field(response.text, "next")})
    assert not response.url.startswith(idp), f"still at the IdP: {response.url}\n" \
        f"{response.text[:1500]}"
    return response


def test_portal_sign_in_then_sso_to_the_ehr_then_logout(stack: Stack):
    idp, portal, ehr = stack.urls["IdP"], stack.urls["Portal"], stack.urls["EHR"]
    # The banner shows each account's password and the key of its authenticator app, also as
    # an otpauth:// link.
    for username in ("dr.rivera", "np.chen", "staff.okafor", "idp.admin"):
        secret = stack.totp_secret(username)
        assert username in stack.output and stack.password(username) in stack.output
        assert f"authenticator key {secret}" in stack.output
        assert f"otpauth://totp/Provider%20Identity:{username}?secret={secret}&" \
               "issuer=Provider%20Identity" in stack.output, stack.output
    http = requests.Session()

    home = http.get(f"{portal}/", timeout=20)
    assert home.status_code == 200 and "Sign in" in home.text
    assert "default-src 'self'" in home.headers["Content-Security-Policy"]
    assert "<script" not in home.text

    login_page = http.get(f"{portal}/login", timeout=20)
    assert login_page.status_code == 200
    sent = parse_qs(urlsplit(login_page.history[0].headers["Location"]).query)
    assert sent["code_challenge_method"] == ["S256"] and sent["code_challenge"]
    assert sent["nonce"] and sent["state"] and sent["client_id"] == ["portal"]
    dashboard = sign_in(http, stack, login_page, "dr.rivera")
    assert dashboard.status_code == 200 and dashboard.url == f"{portal}/", dashboard.text[:2000]
    text = dashboard.text
    assert "Welcome, Alex Rivera" in text and "Physician" in text
    assert "Your session ends in 11 h 59 min" in text or "Your session ends in 12 h 0 min" in text
    assert 'id="appointments"' in text and "Today's appointments" in html.unescape(text)
    assert "Eleanor Whitfield" in text  # a fictitious patient, from the EHR API
    assert 'id="pending-labs"' in text and "Lipid panel" in text
    assert 'role="alert"' not in text, text
    assert 'id="billing"' not in text  # not the physician's view
    cookie = next(c for c in http.cookies if c.name == "portal_session")
    assert "eyJ" not in cookie.value  # tokens are not readable from the cookie
    assert len(cookie.value) < 4000

    # A browser without an IdP session opening the EHR: it tries prompt=none first, the IdP
    # answers login_required, and the landing page with its "Sign in" button shows.
    stranger = requests.Session()
    landing = stranger.get(f"{ehr}/", timeout=20)
    assert landing.status_code == 200 and landing.url == f"{ehr}/", landing.url
    assert any("prompt=none" in r.headers.get("Location", "") for r in landing.history)
    assert 'id="sign-in"' in landing.text and "Sign in" in landing.text
    assert stranger.get(f"{ehr}/", timeout=20).history == []  # tried once per browser session

    # Single sign-on: opening the EHR signs the user in without a click or a password prompt.
    silent = http.get(f"{ehr}/", timeout=20)
    assert silent.url == f"{ehr}/" and "Alex Rivera" in silent.text, silent.text[:1500]
    assert any("prompt=none" in r.headers.get("Location", "") for r in silent.history)
    at_ehr = http.get(f"{ehr}/login", timeout=20)
    assert at_ehr.status_code == 200 and at_ehr.url == f"{ehr}/", at_ehr.text[:2000]
    visited = [r.url for r in at_ehr.history]
    assert any(u.startswith(f"{idp}/authorize?") for u in visited), visited
    assert not any(u.startswith(f"{idp}/login") for u in visited), visited
    assert "Priya Natarajan" in at_ehr.text and "Alex Rivera" in at_ehr.text
    ehr_cookie = next(c.value for c in http.cookies if c.name == "ehr_session")
    # All on one host (cookies do not tell ports apart): each app's cookies have names of
    # their own, so none overwrites another's.
    names = [c.name for c in http.cookies]
    assert len(names) == len(set(names)), names
    assert {"idp_session", "portal_session", "ehr_session"} <= set(names), names
    assert {c.domain for c in http.cookies} <= {"localhost", "localhost.local"}, names

    # Logout at the portal ends the IdP session too.
    page = http.get(f"{portal}/", timeout=20)
    out = http.post(f"{portal}/logout", timeout=20,
                    data={"csrf_token": _form_field(page.text, "csrf_token")})
    assert out.status_code == 200 and out.url.startswith(f"{portal}/?state="), out.url
    assert any(r.url.startswith(f"{idp}/logout?") for r in out.history)
    assert "You are signed out" in out.text and "Alex Rivera" not in out.text
    assert re.search(r'id="sign-in">Sign in again<', out.text), out.text[:1500]

    # The EHR tab still holds its own session cookie (nothing in the browser touched it), yet
    # reloading it shows the EHR signed out: the IdP told the EHR over the back-channel.
    assert next(c.value for c in http.cookies if c.name == "ehr_session") == ehr_cookie
    reloaded = _signed_out_soon(http, f"{ehr}/", "Alex Rivera")
    assert 'id="ended-elsewhere"' in reloaded.text and "Priya Natarajan" not in reloaded.text
    deliveries = _deliveries(stack, expected=2)
    assert {d["client_id"] for d in deliveries} == {"portal", "ehr"}, deliveries
    assert all(d["delivered_at"] and d["attempts"] == 1 for d in deliveries), deliveries

    again = http.get(f"{portal}/login", timeout=20)
    assert again.url.startswith(f"{idp}/login?"), again.url  # asked to sign in again
    assert "Alex Rivera" not in http.get(f"{portal}/", timeout=20).text


def _signed_out_soon(http: requests.Session, url: str, name: str) -> requests.Response:
    """Back-channel delivery starts once the IdP's logout response has gone out: give it a
    few seconds. The page that no longer shows the user."""
    deadline = time.monotonic() + 15
    while True:
        page = http.get(url, timeout=20)
        assert page.status_code == 200, page.text[:1500]
        if name not in page.text or time.monotonic() > deadline:
            assert name not in page.text, f"{url} still signed in:\n{page.text[:1500]}"
            return page
        time.sleep(0.2)


def _deliveries(stack: Stack, expected: int) -> list[dict]:
    """The IdP's record of back-channel logout deliveries (its database), once `expected` of
    them are delivered (the IdP posts them one after the other) or after 15 s."""
    from idp.oidc.models import BackchannelLogout

    table = BackchannelLogout.__table__
    engine = sa.create_engine(stack.database)
    deadline = time.monotonic() + 15
    try:
        while True:
            with engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(sa.select(table))]
            if sum(1 for r in rows if r["delivered_at"]) >= expected or \
                    time.monotonic() > deadline:
                return rows
            time.sleep(0.2)
    finally:
        engine.dispose()


def test_logout_at_the_ehr_signs_the_portal_out_and_ends_the_idp_session(stack: Stack):
    idp, portal, ehr = stack.urls["IdP"], stack.urls["Portal"], stack.urls["EHR"]
    http = requests.Session()
    dashboard = sign_in(http, stack, http.get(f"{portal}/login", timeout=20), "staff.okafor")
    assert "Welcome, Sam Okafor" in dashboard.text and 'id="billing"' in dashboard.text
    at_ehr = http.get(f"{ehr}/login", timeout=20)
    assert at_ehr.url == f"{ehr}/" and "Sam Okafor" in at_ehr.text  # SSO, no prompt
    portal_cookie = next(c.value for c in http.cookies if c.name == "portal_session")

    out = http.post(f"{ehr}/logout", timeout=20,
                    data={"csrf_token": _form_field(at_ehr.text, "csrf_token")})
    assert out.url.startswith(f"{ehr}/?state=") and "You are signed out" in out.text

    assert next(c.value for c in http.cookies if c.name == "portal_session") == portal_cookie
    reloaded = _signed_out_soon(http, f"{portal}/", "Sam Okafor")
    assert 'id="ended-elsewhere"' in reloaded.text and 'id="billing"' not in reloaded.text

    # prompt=none at the IdP: no session any more.
    _, challenge = _pkce()
    state = secrets.token_urlsafe(8)
    silent = http.get(f"{idp}/authorize?" + urlencode({
        "response_type": "code", "client_id": "portal", "redirect_uri": f"{portal}/callback",
        "scope": "openid", "state": state, "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge, "code_challenge_method": "S256", "prompt": "none"}),
        timeout=20, allow_redirects=False)
    assert silent.status_code == 302, silent.text[:1000]
    answer = parse_qs(urlsplit(silent.headers["Location"]).query)
    assert silent.headers["Location"].startswith(f"{portal}/callback?")
    assert answer["error"] == ["login_required"] and answer["state"] == [state]


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _ehr_access_token(stack: Stack, username: str) -> str:
    """An access token of the `ehr` client for this user (the code flow by hand)."""
    idp, ehr = stack.urls["IdP"], stack.urls["EHR"]
    secret = json.loads((stack.instance / "demo-clients.json").read_text())["ehr"]
    verifier, challenge = _pkce()
    http = requests.Session()
    params = {"response_type": "code", "client_id": "ehr", "redirect_uri": f"{ehr}/callback",
              "scope": "openid roles ehr.patients.read ehr.labs.read ehr.billing.read",
              "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
              "code_challenge": challenge, "code_challenge_method": "S256"}
    page = http.get(f"{idp}/authorize?{urlencode(params)}", timeout=20)
    # The EHR's callback refuses a state it did not send; the code stays unused for us.
    back = sign_in(http, stack, page, username)
    code = parse_qs(urlsplit(back.url).query)["code"][0]
    token = requests.post(f"{idp}/token", auth=("ehr", secret["client_secret"]), timeout=20,
                          data={"grant_type": "authorization_code", "code": code,
                                "redirect_uri": f"{ehr}/callback", "code_verifier": verifier})
    assert token.status_code == 200, token.text
    return token.json()["access_token"]


def test_ehr_api_checks_token_scope_and_role(stack: Stack):
    api = f"{stack.urls['EHR']}/api"

    anonymous = requests.get(f"{api}/patients", timeout=20)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer ")
    forged = requests.get(f"{api}/patients", headers={"Authorization": "Bearer a.b.c"},
                          timeout=20)
    assert forged.status_code == 401 and 'error="invalid_token"' in \
        forged.headers["WWW-Authenticate"]

    physician = {"Authorization": f"Bearer {_ehr_access_token(stack, 'dr.rivera')}"}
    labs = requests.get(f"{api}/labs?status=pending", headers=physician, timeout=20)
    assert labs.status_code == 200 and {i["status"] for i in labs.json()["items"]} == {
        "pending"}
    no_scope = requests.get(f"{api}/appointments", headers=physician, timeout=20)
    assert no_scope.status_code == 403  # ehr.appointments.read was not asked for
    assert 'error="insufficient_scope"' in no_scope.headers["WWW-Authenticate"]
    billing = requests.get(f"{api}/billing", headers=physician, timeout=20)
    assert billing.status_code == 403  # the scope is there, the role is not
    assert 'error="insufficient_scope"' in billing.headers["WWW-Authenticate"]

    staff = {"Authorization": f"Bearer {_ehr_access_token(stack, 'staff.okafor')}"}
    claims = requests.get(f"{api}/billing", headers=staff, timeout=20)
    assert claims.status_code == 200 and claims.json()["items"]
    assert requests.get(f"{api}/labs", headers=staff, timeout=20).status_code == 403


def test_signing_a_prescription_at_the_ehr_asks_for_step_up(stack: Stack):
    """The demo accounts have an authenticator app, no security key: the EHR's step-up to
    aal2-phr comes back as unmet_authentication_requirements, shown in plain words, and the
    EHR session survives it."""
    idp, ehr = stack.urls["IdP"], stack.urls["EHR"]
    http = requests.Session()
    sign_in(http, stack, http.get(f"{ehr}/login", timeout=20), "np.chen")
    page = http.get(f"{ehr}/prescriptions/sign", timeout=20)
    assert page.status_code == 200 and "Placebocillin" in page.text
    assert "you will be asked for your security key or biometrics" in page.text
    answer = http.post(f"{ehr}/prescriptions/sign", timeout=20,
                       data={"csrf_token": _form_field(page.text, "csrf_token")})
    visited = [r.url for r in answer.history]
    asked = next(u for u in visited if u.startswith(f"{idp}/authorize?"))
    assert parse_qs(urlsplit(asked).query)["acr_values"] == ["urn:healthidp:acr:aal2-phr"]
    assert answer.status_code == 403 and answer.url.startswith(f"{ehr}/callback?error=")
    assert "needs a phishing-resistant sign-in" in answer.text
    assert f'href="{idp}/mfa/factors"' in answer.text
    again = http.get(f"{ehr}/prescriptions/sign", timeout=20)
    assert "Jordan Chen" in again.text and 'id="signed"' not in again.text


# -- the same, in Chromium --------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium_sign_in(page, stack: Stack, username: str) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    idp = stack.urls["IdP"]
    page.wait_for_url(f"{idp}/login?**")
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    page.get_by_label("Username or NPI").fill(username)
    page.get_by_label("Password").fill(stack.password(username))
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"{idp}/mfa/challenge")
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(stack.totp_secret(username)).now())
    page.get_by_role("button", name="Verify").click()
    stack.forget_totp_use(username)
    page.wait_for_load_state()
    if page.url.startswith(f"{idp}/account/acknowledge"):
        page.locator("#acknowledge").check()
        page.get_by_role("button", name="Continue").click()


def test_in_chromium_sso_role_dashboards_and_logout_everywhere(stack: Stack):
    """Issue 7's browser test: sign in at the portal (password + TOTP), open the EHR signed in
    with no prompt, the dashboard differs for a physician and for administrative staff, log
    out at the EHR: the portal is signed out on reload and prompt=none answers login_required.
    Screenshots of both dashboards land in the stack's instance dir (and in SCREENSHOT_DIR when
    set, e.g. docs/screenshots for the README)."""
    from playwright.sync_api import expect, sync_playwright

    idp, portal, ehr = stack.urls["IdP"], stack.urls["Portal"], stack.urls["EHR"]
    shots = [stack.instance]
    if os.environ.get("SCREENSHOT_DIR"):
        shots.append(Path(os.environ["SCREENSHOT_DIR"]))
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - any launch failure fails the test
            pytest.fail(f"Chromium did not start from {CHROMIUM}: {exc}", pytrace=False)
        try:
            for username, role, shows, hides in (
                    ("dr.rivera", "Physician", "Today's appointments", "Billing"),
                    ("staff.okafor", "Administrative staff", "Billing",
                     "Today's appointments")):
                context = browser.new_context(viewport={"width": 1100, "height": 800})
                context.set_default_timeout(20_000)
                page = context.new_page()
                problems: list[str] = []
                page.on("console", lambda msg, box=problems: box.append(
                    f"{msg.text} ({msg.location.get('url')})") if msg.type == "error" else None)
                idp_logins: list[str] = []
                page.on("request", lambda req, box=idp_logins: box.append(req.url)
                        if req.url.startswith(f"{idp}/login") else None)

                page.goto(f"{portal}/")
                page.get_by_role("button", name="Sign in").click()
                _chromium_sign_in(page, stack, username)
                page.wait_for_url(f"{portal}/")
                expect(page.get_by_text(role, exact=False).first).to_be_visible()
                expect(page.get_by_role("heading", name=shows)).to_be_visible()
                expect(page.get_by_role("heading", name=hides)).to_have_count(0)
                for folder in shots:
                    folder.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(folder / f"portal-{username.split('.')[0]}.png"),
                                    full_page=True)

                # Open the EHR: signed in without a click, a password or a code prompt
                # (the EHR asks the IdP with prompt=none first).
                before = len(idp_logins)
                page.get_by_role("link", name="Open the EHR").click()
                page.wait_for_url(f"{ehr}/")
                expect(page.get_by_role("heading", name="Patients")).to_be_visible()
                assert len(idp_logins) == before, idp_logins

                # Log out at the EHR; the portal, reloaded, is signed out (back-channel).
                page.get_by_role("button", name="Logout").click()
                expect(page.get_by_text("You are signed out.")).to_be_visible()
                deadline = time.monotonic() + 15
                while True:
                    page.goto(f"{portal}/")
                    if page.get_by_role("heading", name=shows).count() == 0 or \
                            time.monotonic() > deadline:
                        break
                    time.sleep(0.3)
                expect(page.get_by_role("heading", name="Provider Portal")).to_be_visible()
                expect(page.locator("#ended-elsewhere")).to_be_visible()

                # prompt=none at the IdP: no session left.
                _, challenge = _pkce()
                page.goto(f"{idp}/authorize?" + urlencode({
                    "response_type": "code", "client_id": "portal",
                    "redirect_uri": f"{portal}/callback", "scope": "openid",
                    "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
                    "code_challenge": challenge, "code_challenge_method": "S256",
                    "prompt": "none"}))
                page.wait_for_url(f"{portal}/callback?**")
                assert parse_qs(urlsplit(page.url).query)["error"] == ["login_required"]
                context.close()
                # Expected: no favicon anywhere; the portal's callback refuses login_required.
                assert not [p for p in problems if "/favicon.ico)" not in p and not (
                    "status of 400" in p and "/callback?error=login_required" in p)], problems
        finally:
            browser.close()


def test_mails_arrive_in_the_dev_mailbox_and_their_links_work(stack: Stack):
    """Forgot password at the IdP: the mail is in the dev mailbox's web inbox (the banner names
    it), its page shows the text part and the reset link, which opens the reset form."""
    idp, inbox = stack.urls["IdP"], stack.urls["Mail"]
    banner = "".join(stack.lines)
    assert f"dev mailbox {inbox}" in banner and f"{idp}/admin/" in banner
    assert f"{idp}/admin/sms-outbox" in banner
    assert f"NPI {npi_with_check_digit('123456789')}" in banner  # dr.rivera's
    http = requests.Session()
    form = http.get(f"{idp}/password/forgot", timeout=20)
    sent = http.post(f"{idp}/password/forgot", timeout=20, data={
        "identifier": "np.chen", "csrf_token": _form_field(form.text, "csrf_token")})
    assert sent.status_code == 200, sent.text[:1500]
    deadline = time.monotonic() + 15
    while True:
        listing = http.get(f"{inbox}/?to=np.chen%40hospital.example", timeout=20)
        found = re.search(r'href="(/mail/[0-9a-f-]+)">Reset your password<', listing.text)
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert found, listing.text[:2000]
    mail = http.get(f"{inbox}{found.group(1)}", timeout=20)
    assert mail.status_code == 200 and 'id="text"' in mail.text and "Hello Jordan Chen" in \
        mail.text
    link = re.search(rf'<a href="({re.escape(idp)}/password/reset/[^"]+)"', mail.text)
    assert link, mail.text[:2000]
    page = http.get(html.unescape(link.group(1)), timeout=20)
    assert page.status_code == 200 and 'name="new_password"' in page.text, page.text[:1500]
    assert http.get(f"{inbox}/mail/0000000000000000000-00000000", timeout=20).status_code == 404
    assert http.get(f"{inbox}/mail/..%2f..%2fetc%2fpasswd", timeout=20).status_code == 404
