"""A leaver, provisioned away over SCIM, in headless Chromium against the development stack
(`make run`: the IdP, the portal and the EHR as gunicorn processes): a nurse practitioner is
signed in to the portal and, by single sign-on, the EHR, and holds a refresh token; HR
(Entra ID's PATCH, `"op": "Replace"` with the boolean string "False") deactivates her.
Within that one request the IdP ends her sessions: both relying parties show her signed out
(back-channel logout), the refresh token is refused, introspection of her access token says
active: false, signing in again is refused, and the audit trail holds the termination with
the SCIM token's name."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
import requests
import sqlalchemy as sa
from playwright.sync_api import Browser, expect, sync_playwright

from idp import clock
from idp.audit.models import AuditEvent
from idp.core.crypto import digest
from idp.oidc.models import BackchannelLogout
from idp.scim.models import ScimToken
from tests.e2e.test_devstack import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Stack,
    _chromium_sign_in,
    _form_field,
    _pkce,
    running_stack,
)
from tests.log_scan import register as register_secret

pytestmark = pytest.mark.e2e

TOKEN_NAME = "HR (Entra ID)"
USERNAME = "np.chen"
SHOWN = "Jordan Chen"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("devstack-scim")) as running:
        yield running


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - any launch failure fails the test
            pytest.fail(f"Chromium did not start from {CHROMIUM}: {exc}", pytrace=False)
        yield browser
        browser.close()


def _rows(stack: Stack, query: sa.Select) -> list[dict]:
    engine = sa.create_engine(stack.database)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]
    finally:
        engine.dispose()


def _scim_token(stack: Stack) -> str:
    """What `idp scim tokens create` stores, written into the stack's own database."""
    token = "scim_" + secrets.token_urlsafe(32)
    register_secret("scim token", token)
    engine = sa.create_engine(stack.database)
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(ScimToken.__table__).values(
                name=TOKEN_NAME, token_hash=digest(token), created_at=clock.now()))
    finally:
        engine.dispose()
    return token


def _portal_tokens(stack: Stack) -> dict:
    """Access and refresh token of the portal for the user (the code flow by hand, another
    SSO session of hers)."""
    idp, portal = stack.urls["IdP"], stack.urls["Portal"]
    secret = json.loads((stack.instance / "demo-clients.json").read_text())["portal"]
    verifier, challenge = _pkce()
    http = requests.Session()
    params = {"response_type": "code", "client_id": "portal",
              "redirect_uri": f"{portal}/callback", "scope": "openid roles offline_access",
              "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
              "code_challenge": challenge, "code_challenge_method": "S256",
              "prompt": "consent"}
    login = http.get(f"{idp}/authorize?{urlencode(params)}", timeout=20)
    challenge = http.post(f"{idp}/login", timeout=20, data={
        "username": USERNAME, "password": stack.password(USERNAME),
        "csrf_token": _form_field(login.text, "csrf_token"),
        "next": _form_field(login.text, "next")})
    consent = http.post(challenge.url, timeout=20, data={
        "code": pyotp.TOTP(stack.totp_secret(USERNAME)).now(),
        "csrf_token": _form_field(challenge.text, "csrf_token")})
    stack.forget_totp_use(USERNAME)
    assert "Allow access" in consent.text, consent.text[:1500]  # offline_access: consent
    back = http.post(consent.url, timeout=20, allow_redirects=False, data={
        "decision": "allow", "csrf_token": _form_field(consent.text, "csrf_token")})
    assert back.status_code in (302, 303), back.text[:1500]
    code = parse_qs(urlsplit(back.headers["Location"]).query)["code"][0]
    token = requests.post(f"{idp}/token", auth=("portal", secret["client_secret"]), timeout=20,
                          data={"grant_type": "authorization_code", "code": code,
                                "redirect_uri": f"{portal}/callback",
                                "code_verifier": verifier})
    assert token.status_code == 200, token.text
    found = token.json()
    assert found.get("refresh_token"), found
    register_secret("refresh token", found["refresh_token"])
    return found


def test_leaver_loses_access_everywhere_at_once(stack: Stack, chromium: Browser):
    idp, portal, ehr = stack.urls["IdP"], stack.urls["Portal"], stack.urls["EHR"]
    clients = json.loads((stack.instance / "demo-clients.json").read_text())
    context = chromium.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    refused: list[str] = []
    page.on("response", lambda r: refused.append(r.url) if r.status >= 500 else None)

    # Signed in at the portal, then the EHR by single sign-on.
    page.goto(f"{portal}/")
    page.get_by_role("button", name="Sign in").click()
    _chromium_sign_in(page, stack, USERNAME)
    page.wait_for_url(f"{portal}/")
    expect(page.get_by_text(SHOWN).first).to_be_visible()
    page.get_by_role("link", name="Open the EHR").click()  # signs in silently (prompt=none)
    page.wait_for_url(f"{ehr}/")
    expect(page.get_by_role("heading", name="Patients")).to_be_visible()
    tokens = _portal_tokens(stack)

    # HR deactivates her: Entra ID looks her up, then PATCHes active to "False".
    scim = requests.Session()
    scim.headers.update({"Authorization": f"Bearer {_scim_token(stack)}",
                         "Content-Type": "application/scim+json"})
    found = scim.get(f"{idp}/scim/v2/Users", timeout=20,
                     params={"filter": f'userName eq "{USERNAME}"'}).json()
    assert found["totalResults"] == 1, found
    user_id = found["Resources"][0]["id"]
    done = scim.patch(f"{idp}/scim/v2/Users/{user_id}", timeout=20, data=json.dumps({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}))
    assert done.status_code == 200 and done.json()["active"] is False, done.text

    # Both relying parties: signed out on their next request (back-channel logout, sent
    # right after the IdP's response).
    for url in (f"{ehr}/", f"{portal}/"):
        deadline = time.monotonic() + 15
        while True:
            page.goto(url)
            if page.locator("#ended-elsewhere").count() or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        expect(page.locator("#ended-elsewhere")).to_be_visible()
        expect(page.get_by_text(SHOWN)).to_have_count(0)
    delivered = _rows(stack, sa.select(BackchannelLogout.__table__))
    assert {d["client_id"] for d in delivered if d["delivered_at"]} >= {"portal", "ehr"}, \
        delivered

    # The refresh token is refused; the access token is no longer active.
    refreshed = requests.post(f"{idp}/token", auth=("portal", clients["portal"]["client_secret"]),
                              data={"grant_type": "refresh_token",
                                    "refresh_token": tokens["refresh_token"]}, timeout=20)
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    introspected = requests.post(f"{idp}/introspect", timeout=20,
                                 auth=("ehr", clients["ehr"]["client_secret"]),
                                 data={"token": tokens["access_token"]})
    assert introspected.status_code == 200 and introspected.json() == {"active": False}

    # Signing in again is refused, with the one message for every refusal.
    page.goto(f"{portal}/")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{idp}/login?**")
    page.get_by_label("Username or NPI").fill(USERNAME)
    page.get_by_label("Password").fill(stack.password(USERNAME))
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_text("The username, NPI or password is not right")).to_be_visible()
    assert page.url.startswith(f"{idp}/login")
    context.close()

    # The audit trail: the termination, by the SCIM token's name.
    events = _rows(stack, sa.select(AuditEvent.__table__).where(
        AuditEvent.__table__.c.event.in_(["user.terminated", "sessions.ended_all"])))
    terminated = [e for e in events if e["event"] == "user.terminated"]
    # Deactivation is not a role change: the role she held stays (nothing else ended them).
    assert [e["detail"]["reason"] for e in events if e["event"] == "sessions.ended_all"] == \
        ["scim_deactivated"]
    assert len(terminated) == 1, events
    assert terminated[0]["actor"] == f"scim:{TOKEN_NAME}"
    assert terminated[0]["detail"]["token_name"] == TOKEN_NAME
    assert terminated[0]["detail"]["reason"] == "deactivated"
    assert terminated[0]["detail"]["sessions_ended"] >= 2
    assert not refused, refused
