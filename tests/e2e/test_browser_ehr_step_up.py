"""The EHR's sensitive action in headless Chromium against the development stack (`make run`,
three gunicorn apps): a clinician signed in with password + authenticator app presses "Sign
prescription"; the EHR steps up through the IdP (acr_values=aal2-phr); without a security key
the IdP's unmet_authentication_requirements is shown in plain words; once the clinician adds
one (Chromium's virtual platform authenticator), the step-up asks for it and the prescription
is signed.

WebAuthn needs the IdP's RP ID to be a host name, not an IP address: this stack's IdP is
http://localhost:PORT (see test_browser_webauthn.py); the portal and EHR stay on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.test_devstack import Stack, running_stack

pytestmark = pytest.mark.e2e

AUTHENTICATOR = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                 "hasUserVerification": True, "isUserVerified": True,
                 "automaticPresenceSimulation": True}
PHR = "urn:healthidp:acr:aal2-phr"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("devstack-localhost"),
                       idp_host="localhost") as running:
        yield running


def _sign_in(page: Page, stack: Stack, username: str) -> None:
    idp = stack.urls["IdP"]
    page.wait_for_url(f"{idp}/login?**")
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


def test_signing_a_prescription_steps_up_to_a_security_key(stack: Stack, browser: Browser):
    idp, ehr = stack.urls["IdP"], stack.urls["EHR"]
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"{msg.text} ({msg.location.get('url')})")
            if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    authenticator = cdp.send("WebAuthn.addVirtualAuthenticator",
                             {"options": AUTHENTICATOR})["authenticatorId"]
    refused: list[str] = []
    page.on("response", lambda r: refused.append(r.url) if r.status >= 500 else None)

    # Signed in at the EHR with password + authenticator app (aal2).
    page.goto(f"{ehr}/")
    page.get_by_role("button", name="Sign in").click()
    _sign_in(page, stack, "dr.rivera")
    page.wait_for_url(f"{ehr}/")
    expect(page.get_by_role("heading", name="Patients")).to_be_visible()

    # Sign: the IdP cannot reach aal2-phr for this account yet; the EHR says so plainly.
    page.get_by_role("link", name="Sign a prescription").click()
    expect(page.get_by_text("you will be asked for your security key or biometrics")
           ).to_be_visible()
    page.get_by_role("button", name="Sign prescription").click()
    page.wait_for_url(f"{ehr}/callback?**")
    assert "error=unmet_authentication_requirements" in page.url
    expect(page.get_by_role("heading", name="A stronger sign-in is needed")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Your account has none set up yet")

    # The way forward the page offers: the IdP's sign-in methods; add the platform
    # authenticator there (recently signed in: no re-authentication).
    page.get_by_role("link", name="Manage your sign-in methods at the identity provider").click()
    page.wait_for_url(f"{idp}/mfa/factors")
    page.goto(f"{idp}/mfa/enroll/webauthn")
    page.get_by_label("Name for this key (optional)").fill("Clinic laptop")
    page.get_by_role("button", name="Add security key or biometrics").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    assert len(cdp.send("WebAuthn.getCredentials",
                        {"authenticatorId": authenticator})["credentials"]) == 1

    # Sign again: step-up asks for the security key (not the app), then comes back to the page.
    page.goto(f"{ehr}/prescriptions/sign")
    page.get_by_role("button", name="Sign prescription").click()
    page.wait_for_url(f"{idp}/mfa/challenge")
    expect(page.get_by_role("heading", name="This action needs a stronger sign-in")
           ).to_be_visible()
    page.get_by_role("button", name="Use security key or biometrics").click()
    page.wait_for_url(f"{ehr}/prescriptions/sign")
    expect(page.get_by_text("Your sign-in meets the requirement for signing.")).to_be_visible()
    page.get_by_role("button", name="Sign prescription").click()
    expect(page.locator("#signed")).to_contain_text("RX-9001 signed by Alex Rivera")
    context.close()

    assert not refused, refused
    unexpected = [p for p in problems if "/favicon.ico)" not in p and not (
        "the server responded with a status of 403" in p and "/callback" in p)]
    assert not unexpected, problems
