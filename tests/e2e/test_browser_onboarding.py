"""The whole onboarding journey in headless Chromium (Playwright) against the IdP under
gunicorn, with the emails that really arrived over SMTP (aiosmtpd):

apply from the login page's "New Provider Registration" → the email-verification link → a
verifier signs in and approves in /admin/verifications → the email with the temporary
credentials → first sign-in: the authenticator app is set up (the existing first-login MFA
enrollment), the temporary password must be replaced, the daily acknowledgment → back at the
relying party with `npi` and `roles` in the signed ID token."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.extensions import db
from idp.onboarding.models import Department, Facility
from tests.e2e.conftest import Server, seed_client
from tests.helpers import PASSWORD, TOTP_SECRETS, make_user, pkce

pytestmark = pytest.mark.e2e

SCOPE = "openid profile email npi roles"
NPI = "1245319599"
EMAIL = "maria.lopez@clinic.example"
CHOSEN = "Granite-Orchid-Velvet-93?"


@contextmanager
def _tab(browser: Browser, expected: str = "/favicon.ico)") -> Iterator[Page]:
    """A tab in a fresh browser context (its own cookies); script or CSP errors fail the test
    (but the `expected` one: a form answered 400 on purpose)."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda msg: problems.append(f"{msg.text} ({msg.location.get('url')})")
           if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert not [p for p in problems if "/favicon.ico)" not in p and expected not in p], problems


def _mail(mailbox, subject: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in mailbox.to(EMAIL) if m["Subject"] == subject]
        if found:
            return found[-1].get_body(preferencelist=("plain",)).get_content()
        time.sleep(0.1)
    pytest.fail(f"no email {subject!r} reached {EMAIL} over SMTP", pytrace=False)


@pytest.fixture
def seeded(ctx, rp_site):
    facility = Facility(name="General Hospital", active=True, created_at=clock.now())
    db.session.add(facility)
    db.session.flush()
    db.session.add(Department(facility_id=facility.id, name="Cardiology"))
    verifier = make_user("vera.verifier", npi=None, role="verifier", given_name="Vera",
                         family_name="Checker")
    secret = TOTP_SECRETS[verifier.username]
    rp = seed_client(first_party=True, name="Provider Portal", scope=SCOPE,
                     redirect_uri=f"http://127.0.0.1:{rp_site.server_address[1]}/cb")
    db.session.commit()  # end the read transaction: SQLite writers in gunicorn must not wait
    return rp, secret


def test_apply_verify_approve_first_sign_in_and_token(idp_server: Server, seeded, rp_site,
                                                       browser: Browser, mailbox):
    rp, verifier_secret = seeded
    expires = (date.today() + timedelta(days=400)).isoformat()

    # 1. the applicant, from the login page
    refused = f"status of 400 (BAD REQUEST) ({idp_server.url('/onboarding/apply')})"
    with _tab(browser, refused) as page:
        page.goto(idp_server.url("/login"))
        page.get_by_role("link", name="New Provider Registration").click()
        expect(page.get_by_role("heading", name="New Provider Registration")).to_be_visible()
        page.get_by_label("Legal first name").fill("Maria")
        page.get_by_label("Legal last name").fill("Lopez")
        page.get_by_label("Email address").fill(EMAIL)
        page.get_by_label("Phone number").fill("(650) 253-0000")
        page.get_by_label("Role applied for").select_option(label="Physician")
        page.get_by_label("NPI (National Provider Identifier)").fill("1245319598")  # typo
        page.get_by_label("License state or territory").select_option(label="California")
        page.get_by_label("License number").fill("A123456")
        page.get_by_label("License expiry date").fill(expires)
        page.get_by_label("Facility").select_option(label="General Hospital")
        page.get_by_label("Department").select_option(label="General Hospital · Cardiology")
        page.get_by_role("button", name="Submit application").click()
        expect(page.locator("#npi-error")).to_contain_text("check digit")
        page.get_by_label("NPI (National Provider Identifier)").fill(NPI)
        page.get_by_role("button", name="Submit application").click()
        expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

        body = _mail(mailbox, "Confirm your email to complete your provider registration")
        link = re.search(re.escape(idp_server.base) + r"/onboarding/verify/[A-Za-z0-9_-]+", body)
        assert link, body
        page.goto(link.group(0))
        page.get_by_role("button", name="Confirm my email").click()
        expect(page.get_by_role("heading", name="Application received")).to_be_visible()

    # 2. the verifier approves in the admin queue
    with _tab(browser) as page:
        page.goto(idp_server.url("/admin/verifications"))
        assert page.url.startswith(idp_server.url("/login?")), page.url
        page.get_by_label("Username or NPI").fill("vera.verifier")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Code from your authenticator app").fill(
            pyotp.TOTP(verifier_secret).now())
        page.get_by_role("button", name="Verify").click()
        expect(page.get_by_role("heading", name="Verification queue")).to_be_visible()
        row = page.locator("table.verifications tr", has_text="Maria Lopez")
        expect(row).to_contain_text(NPI)
        expect(row).to_contain_text("0 h")
        row.get_by_role("link", name="Maria Lopez").click()
        expect(page.get_by_role("heading", name="Application of Maria Lopez")).to_be_visible()
        expect(page.locator("#registry")).to_contain_text("no registry configured")
        expect(page.locator("table.audit")).to_contain_text("onboarding.email_verified")
        page.get_by_label("Role to grant").select_option("physician")
        page.get_by_label("Facility").select_option(label="General Hospital")
        page.get_by_label("Department").select_option(label="General Hospital · Cardiology")
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("status")).to_contain_text("Approved")
        expect(page.locator("#status")).to_have_text("approved")
        page.screenshot(path="/tmp/onboarding-approved.png", full_page=True)

    # 3. the temporary credentials arrive by email
    body = _mail(mailbox, "Your provider account is ready")
    username = re.search(r"Username: (\S+)", body).group(1)
    temporary = re.search(r"Temporary password: (\S+)", body).group(1)
    assert username == "maria.lopez" and idp_server.url("/login") in body

    # 4. first sign-in through the relying party
    verifier_code, challenge = pkce()
    asked = {"response_type": "code", "client_id": rp.client_id,
             "redirect_uri": rp.redirect_uri, "scope": SCOPE,
             "state": secrets.token_urlsafe(12), "nonce": secrets.token_urlsafe(12),
             "code_challenge": challenge, "code_challenge_method": "S256"}
    with _tab(browser) as page:
        page.goto(idp_server.url("/login"))  # the link in the email works
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.goto(idp_server.url("/authorize?" + urlencode(asked)))
        page.get_by_label("Username or NPI").fill(username)
        page.get_by_label("Password", exact=True).fill(temporary)
        page.get_by_role("button", name="Sign in").click()

        # MFA enrollment (no factor yet): the authenticator app
        page.wait_for_url(idp_server.url("/mfa/enroll"))
        page.get_by_role("link", name="Authenticator app").click()
        expect(page.get_by_role("heading", name="Set up an authenticator app")).to_be_visible()
        secret = page.locator("#totp-secret").inner_text().strip()
        page.get_by_label("Enter the 6-digit code the app shows").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Confirm").click()
        expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
        page.get_by_role("link", name="I have saved my codes, continue").click()

        # forced password change: the temporary password cannot stay
        expect(page.get_by_role("heading", name="Set a new password")).to_be_visible()
        page.get_by_label("New password", exact=True).fill(CHOSEN)
        page.get_by_label("Confirm new password", exact=True).fill(CHOSEN)
        page.get_by_role("button", name="Save password").click()

        # the daily acknowledgment, then the relying party
        page.get_by_label("I have read and accept the statement above").check()
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(rp.redirect_uri + "?*")
        expect(page.get_by_text("Back at the relying party.")).to_be_visible()
        parts = urlsplit(page.url)
        assert f"{parts.path}?{parts.query}" in rp_site.hits
        got = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert got["state"] == asked["state"]

    response = requests.post(idp_server.url("/token"), auth=(rp.client_id, rp.client_secret),
                             timeout=10, data={"grant_type": "authorization_code",
                                               "code": got["code"],
                                               "redirect_uri": rp.redirect_uri,
                                               "code_verifier": verifier_code})
    assert response.status_code == 200, response.text
    meta = requests.get(idp_server.url("/.well-known/openid-configuration"), timeout=10).json()
    keys = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    claims = jwt.decode(response.json()["id_token"], keys,
                        algorithms=meta["id_token_signing_alg_values_supported"]).claims
    assert claims["nonce"] == asked["nonce"] and claims["preferred_username"] == username
    assert claims["npi"] == NPI and claims["license_state"] == "CA"
    assert claims["roles"] == ["physician"]
    assert (claims["facility"], claims["department"]) == ("General Hospital", "Cardiology")
    assert claims["amr"] == ["pwd", "otp", "mfa"]

    db.session.rollback()
    user = db.session.execute(select(User).where(User.username == username)).scalar_one()
    assert not user.must_change_password and user.npi == NPI
    db.session.commit()
