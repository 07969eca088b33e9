"""Signing in with the hospital's directory, in headless Chromium (issue 23): the development
stack (IdP, portal, EHR) with panva's oidc-provider as the upstream (tests/e2e/node/
upstream.mjs, standing in for Entra ID or Okta), registered with `idp upstreams create`.

- A clinician presses "Sign in with hospital" at the portal's sign-in, signs in at the
  upstream, proves the existing account once (password + authenticator app), lands in the
  portal, then opens the EHR without any prompt (SSO).
- Signing out at the upstream ends the IdP session (back-channel logout token) and with it the
  portal's.
- A new person signed in upstream applies through the pre-filled onboarding form and lands in
  the verification queue.
- An administrator adds a second upstream in the admin console (/admin/upstreams), which shows
  the redirect URI to register there; the login page then offers "Sign in with okta", which
  leads through that upstream to the choice an unknown identity is given.

axe-core checks the admin page, the login page and the choice page (tests/e2e/axe.py). With
SCREENSHOTS_DIR set (`make screenshots`), they are saved there as PNG files for
docs/federation.md and the README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pyotp
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect

from tests.e2e.axe import assert_accessible
from tests.e2e.test_devstack import Stack, _chromium_sign_in, running_stack
from tests.upstream_support import UPSTREAM_SECRET, NodeUpstream

pytestmark = pytest.mark.e2e

IDP = str(Path(sys.executable).parent / "idp")
ACCOUNTS = {
    "arivera": {"password": "upstream-pw-rivera", "claims": {
        "email": "alex.rivera@directory.example", "email_verified": True,
        "given_name": "Alex", "family_name": "Rivera"}},
    "mlopez": {"password": "upstream-pw-lopez", "claims": {
        "email": "maria.lopez@directory.example", "email_verified": True,
        "given_name": "Maria", "family_name": "Lopez"}},
}
SHOTS = Path(os.environ["SCREENSHOTS_DIR"]) if os.environ.get("SCREENSHOTS_DIR") else None


def _check(page: Page, name: str) -> None:
    """axe on the page as it is now; its screenshot under `make screenshots`."""
    assert_accessible(page, name)
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("devstack-upstream")) as running:
        yield running


@pytest.fixture(scope="module")
def upstream(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeUpstream]:
    node = NodeUpstream(tmp_path_factory.mktemp("node-upstream"), [stack.urls["IdP"]],
                        ACCOUNTS, name="hospital")
    env = {**os.environ, "DATABASE_URL": stack.database,
           "IDP_INSTANCE_DIR": str(stack.instance),
           "IDP_KEYS_DIR": str(stack.instance.parent / "keys"),
           "IDP_ISSUER": stack.urls["IdP"], "IDP_OUTBOUND_ALLOW": "127.0.0.0/8 ::1"}
    made = subprocess.run([IDP, "upstreams", "create", "--name", "hospital", "--issuer",
                           node.issuer, "--client-id", node.client_id, "--client-secret",
                           UPSTREAM_SECRET, "--json"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["redirect_uri"] == \
        f"{stack.urls['IdP']}/upstream/hospital/callback"
    yield node
    node.stop()


def _at_upstream(page: Page, node: NodeUpstream, login: str) -> None:
    page.wait_for_url(f"{node.issuer}/interaction/**")
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(ACCOUNTS[login]["password"])
    page.get_by_role("button", name="Sign in upstream").click()


def _acknowledge_if_asked(page: Page, idp: str) -> None:
    page.wait_for_load_state()
    if page.url.startswith(f"{idp}/account/acknowledge"):
        page.locator("#acknowledge").check()
        page.get_by_role("button", name="Continue").click()


def _query(stack: Stack, sql: str, **params) -> list[tuple]:
    engine = sa.create_engine(stack.database)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def test_link_an_existing_account_then_sso_to_the_ehr_then_upstream_logout(
        stack: Stack, upstream: NodeUpstream, browser: Browser):
    idp, portal, ehr = stack.urls["IdP"], stack.urls["Portal"], stack.urls["EHR"]
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    context.set_default_timeout(20_000)
    page = context.new_page()
    failures: list[str] = []
    page.on("response", lambda r: failures.append(r.url) if r.status >= 500 else None)

    page.goto(f"{portal}/")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{idp}/login?**")
    page.get_by_role("link", name="Sign in with hospital").click()
    _at_upstream(page, upstream, "arivera")

    # Unknown upstream identity: nothing linked yet; prove the existing account once.
    page.wait_for_url(f"{idp}/upstream/link")
    expect(page.get_by_text("alex.rivera@directory.example", exact=False)).to_be_visible()
    page.get_by_label("Username or NPI").fill("dr.rivera")
    page.get_by_label("Password").fill(stack.password("dr.rivera"))
    page.get_by_role("button", name="Connect my account").click()
    page.wait_for_url(f"{idp}/mfa/challenge")
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(stack.totp_secret("dr.rivera")).now())
    page.get_by_role("button", name="Verify").click()
    stack.forget_totp_use("dr.rivera")
    _acknowledge_if_asked(page, idp)
    page.wait_for_url(f"{portal}/")
    expect(page.get_by_role("heading", name="Today's appointments")).to_be_visible()
    [(subject, how)] = _query(stack, "SELECT l.subject, l.how FROM upstream_links l "
                                     "JOIN users u ON u.id = l.user_id "
                                     "WHERE u.username = 'dr.rivera'")
    assert (subject, how) == ("arivera", "proven")

    # SSO: the EHR signs in without a prompt.
    page.get_by_role("link", name="Open the EHR").click()
    page.wait_for_url(f"{ehr}/")
    expect(page.get_by_role("heading", name="Patients")).to_be_visible()

    # The account page lists the linked identity.
    page.goto(f"{idp}/account/linked")
    expect(page.get_by_role("cell", name="alex.rivera@directory.example")).to_be_visible()

    # Sign out at the upstream: its back-channel logout token ends the IdP session, and the
    # IdP's own back-channel logout ends the portal's.
    page.goto(f"{upstream.issuer}/session/end")
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_load_state()
    deadline = time.monotonic() + 20
    while True:
        page.goto(f"{idp}/account/linked")
        if page.url.startswith(f"{idp}/login") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert page.url.startswith(f"{idp}/login"), page.url
    deadline = time.monotonic() + 20
    while True:
        page.goto(f"{portal}/")
        if page.get_by_role("heading", name="Today's appointments").count() == 0 or \
                time.monotonic() > deadline:
            break
        time.sleep(0.3)
    expect(page.get_by_role("heading", name="Today's appointments")).to_have_count(0)
    [(reason,)] = _query(stack, "SELECT s.end_reason FROM sso_sessions s JOIN users u ON "
                                "u.id = s.user_id WHERE u.username = 'dr.rivera' "
                                "AND s.end_reason = 'upstream_logout'")
    assert reason == "upstream_logout"

    # Next time: the link is known, the upstream's sign-in and our second factor suffice.
    page.goto(f"{portal}/")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{idp}/login?**")
    page.get_by_role("link", name="Sign in with hospital").click()
    _at_upstream(page, upstream, "arivera")
    page.wait_for_url(f"{idp}/mfa/challenge")
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(stack.totp_secret("dr.rivera")).now())
    page.get_by_role("button", name="Verify").click()
    stack.forget_totp_use("dr.rivera")
    _acknowledge_if_asked(page, idp)
    page.wait_for_url(f"{portal}/")
    expect(page.get_by_role("heading", name="Today's appointments")).to_be_visible()

    # Sign out here: the IdP offers to sign out at the upstream too (RP-initiated logout
    # there), then the upstream sends the browser back to our sign-in page.
    page.get_by_role("button", name="Logout").click()
    page.wait_for_url(f"{idp}/logout**")
    page.get_by_role("link", name="Also sign out of hospital").click()
    page.wait_for_url(f"{upstream.issuer}/session/end**")
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(f"{idp}/login**")
    # The upstream's session is gone too: it asks for the password again.
    page.get_by_role("link", name="Sign in with hospital").click()
    page.wait_for_url(f"{upstream.issuer}/interaction/**")
    expect(page.get_by_label("Password")).to_be_visible()
    assert failures == []
    context.close()


def test_a_new_person_applies_prefilled_and_lands_in_the_verification_queue(
        stack: Stack, upstream: NodeUpstream, browser: Browser):
    idp = stack.urls["IdP"]
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto(f"{idp}/login?idp_hint=hospital")  # straight to the upstream
    _at_upstream(page, upstream, "mlopez")
    page.wait_for_url(f"{idp}/upstream/link")
    page.get_by_role("link", name="Apply for an account").click()
    page.wait_for_url(f"{idp}/onboarding/apply")
    expect(page.locator("#email")).to_have_value("maria.lopez@directory.example")
    expect(page.locator("#given_name")).to_have_value("Maria")
    expect(page.locator("#family_name")).to_have_value("Lopez")
    page.locator("#phone").fill("+1 650 253 0000")
    page.locator("#role").select_option("physician")
    page.locator("#npi").fill("1245319599")
    page.locator("#license_state").select_option("CA")
    page.locator("#license_number").fill("A123456")
    page.locator("#license_expires").fill((date.today() + timedelta(days=365)).isoformat())
    page.locator("#facility_id").select_option(index=1)
    page.get_by_role("button", name="Submit application").click()
    expect(page.get_by_role("heading", name="Application received")).to_be_visible()
    [(status, app_id)] = _query(stack, "SELECT status, id FROM applications WHERE email = "
                                       ":email", email="maria.lopez@directory.example")
    assert status == "pending"  # in the verification queue
    [(pending_app,)] = _query(stack, "SELECT application_id FROM upstream_pending WHERE "
                                     "subject = 'mlopez'")
    assert pending_app == app_id
    context.close()


def test_an_admin_adds_an_upstream_in_the_console_and_the_login_page_offers_it(
        stack: Stack, upstream: NodeUpstream, browser: Browser,
        tmp_path_factory: pytest.TempPathFactory):
    idp, portal = stack.urls["IdP"], stack.urls["Portal"]
    okta = NodeUpstream(tmp_path_factory.mktemp("node-okta"), [idp], ACCOUNTS, name="okta")
    try:
        admin = browser.new_context(viewport={"width": 1100, "height": 800})
        admin.set_default_timeout(20_000)
        page = admin.new_page()
        page.goto(f"{idp}/login?next=/admin/upstreams")
        _chromium_sign_in(page, stack, "idp.admin")
        page.wait_for_url(f"{idp}/admin/upstreams")
        expect(page.get_by_role("cell", name=f"{idp}/upstream/hospital/callback")).to_be_visible()
        page.get_by_label("Name (the button reads").fill("okta")
        page.get_by_label("Issuer URL").fill(okta.issuer)
        page.get_by_label("Client ID").fill(okta.client_id)
        page.get_by_label("Client secret (stored encrypted)").fill(UPSTREAM_SECRET)
        page.get_by_label("Allowed domains").fill("directory.example")
        _check(page, "admin-upstream-new")
        page.get_by_role("button", name="Add upstream").click()
        expect(page.get_by_role("status")).to_contain_text("Upstream okta added")
        expect(page.locator("#made-redirect-uri")).to_have_text(f"{idp}/upstream/okta/callback")
        expect(page.get_by_label("Issuer URL")).to_have_value("")  # the form is empty again
        _check(page, "admin-upstreams")
        [(issuer, enabled)] = _query(stack, "SELECT issuer, enabled FROM upstreams WHERE "
                                            "name = 'okta'")
        assert issuer == okta.issuer and enabled
        admin.close()

        # Someone signed out: the login page offers both upstreams; the new one works.
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        context.set_default_timeout(20_000)
        page = context.new_page()
        page.goto(f"{portal}/")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{idp}/login?**")
        expect(page.get_by_role("link", name="Sign in with hospital")).to_be_visible()
        expect(page.get_by_role("link", name="Sign in with okta")).to_be_visible()
        _check(page, "login-upstreams")
        page.get_by_role("link", name="Sign in with okta").click()
        _at_upstream(page, okta, "mlopez")
        page.wait_for_url(f"{idp}/upstream/link")
        expect(page.get_by_text("maria.lopez@directory.example", exact=False)).to_be_visible()
        expect(page.get_by_role("link", name="Apply for an account")).to_be_visible()
        _check(page, "upstream-link")
        context.close()
    finally:
        okta.stop()
