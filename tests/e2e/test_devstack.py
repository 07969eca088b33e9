"""`python -m clients.devstack` as a developer runs it (`make run`), on free ports with its own
instance dir, keys and database: sign in at the portal (password, then the code of the
authenticator app whose key the banner prints), single sign-on into the EHR, the EHR API's token,
scope and role checks, and logout ending the IdP session."""

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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
import requests
import sqlalchemy as sa

from idp.accounts.models import User
from idp.config import PROJECT_ROOT
from idp.mfa.models import Factor

pytestmark = pytest.mark.e2e

START_TIMEOUT = 120.0
STOP_TIMEOUT = 45.0
# Settings of the developer's shell that would point the stack elsewhere.
STRIP = ("IDP_ISSUER", "IDP_SECRET_KEY", "IDP_PROXY_HOPS", "EHR_AUDIENCE", "EHR_API",
         "PORTAL_URL", "EHR_URL", "PORTAL_CLIENT_ID", "PORTAL_CLIENT_SECRET", "EHR_CLIENT_ID",
         "EHR_CLIENT_SECRET", "PORTAL_SECRET_KEY", "EHR_SECRET_KEY")
URL_LINE = re.compile(r"^\s+(IdP|Portal|EHR)\s+(http://127\.0\.0\.1:\d+)\s*$")


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
    tmp = tmp_path_factory.mktemp("devstack")
    database, schema = _database(tmp)
    ports = {"IDP_PORT": free_port(), "PORTAL_PORT": free_port(), "EHR_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if k not in STRIP}
    env.update({k: str(v) for k, v in ports.items()})
    env.update(IDP_INSTANCE_DIR=str(tmp / "instance"), IDP_KEYS_DIR=str(tmp / "keys"),
               DATABASE_URL=database, PYTHONUNBUFFERED="1")
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
        expected = {f"http://127.0.0.1:{ports[p]}" for p in ports}
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
    assert 'id="appointments"' in text and "Today&#39;s appointments" in text
    assert "Testy McTestface" in text  # a fictitious patient, from the EHR API
    assert 'id="pending-labs"' in text and "Lipid panel" in text
    assert 'role="alert"' not in text, text
    assert 'id="billing"' not in text  # not the physician's view
    cookie = next(c for c in http.cookies if c.name == "portal_session")
    assert "eyJ" not in cookie.value  # tokens are not readable from the cookie
    assert len(cookie.value) < 4000

    # Single sign-on: the EHR signs the user in without a password prompt.
    at_ehr = http.get(f"{ehr}/login", timeout=20)
    assert at_ehr.status_code == 200 and at_ehr.url == f"{ehr}/", at_ehr.text[:2000]
    visited = [r.url for r in at_ehr.history]
    assert any(u.startswith(f"{idp}/authorize?") for u in visited), visited
    assert not any(u.startswith(f"{idp}/login") for u in visited), visited
    assert "Jane Placeholder" in at_ehr.text and "Alex Rivera" in at_ehr.text

    # Logout at the portal ends the IdP session too.
    page = http.get(f"{portal}/", timeout=20)
    out = http.post(f"{portal}/logout", timeout=20,
                    data={"csrf_token": _form_field(page.text, "csrf_token")})
    assert out.status_code == 200 and out.url.startswith(f"{portal}/?state="), out.url
    assert any(r.url.startswith(f"{idp}/logout?") for r in out.history)
    assert "You are signed out" in out.text and "Alex Rivera" not in out.text
    again = http.get(f"{portal}/login", timeout=20)
    assert again.url.startswith(f"{idp}/login?"), again.url  # asked to sign in again
    assert "Alex Rivera" not in http.get(f"{portal}/", timeout=20).text


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
