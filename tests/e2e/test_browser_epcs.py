"""Controlled-substance signing (DEA EPCS) in headless Chromium against the development stack
(`python -m clients.devstack`: IdP, portal and EHR under gunicorn), with Chromium's virtual
authenticator as the security key / platform biometrics.

- np.chen without the EPCS permission: the EHR refuses before any ceremony.
- np.chen with the permission but only a text-message factor (she signs in with an SMS code):
  the IdP refuses the ceremony and the EHR shows why (SMS does not count).
- dr.rivera with the permission and only the authenticator app: refused, the message names
  what is needed; he enrolls a security key at the IdP, signs again: the EHR pushes its two
  controlled-substance prescriptions (PAR, authorization_details), the IdP shows each one's
  data (21 CFR 1311.140(a)(3)) and the DEA statement while asking for the password and the
  key, and the EHR signs with an ID token at acr epcs whose amr shows hwk and pwd and an
  access token carrying the prescriptions' SHA-256; each signature is audited with its hash.
  A quantity changed after signing: the EHR refuses to transmit to the pharmacy.

Set-up writes the stack's own database (test set-up only): the approved EPCS permission (the
two-admin console is tested in tests/integration/test_epcs.py) and np.chen's SMS factor.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator

import pyotp
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, BrowserContext, Page, expect

from idp import clock
from tests.e2e.axe import assert_accessible
from tests.e2e.test_devstack import Stack, running_stack

pytestmark = pytest.mark.e2e

AUTHENTICATOR = {"protocol": "ctap2", "transport": "usb", "hasResidentKey": True,
                 "hasUserVerification": True, "isUserVerified": True,
                 "automaticPresenceSimulation": True}
EPCS = "urn:healthidp:acr:epcs"
RX = "RX-9002"
PRESCRIPTIONS = ("RX-9002", "RX-9003")
# 21 CFR 1311.140(a)(4), as policies/epcs.toml words it
STATEMENT = ("By completing the two-factor authentication protocol at this time, you are "
             "legally signing the prescription(s) and authorizing the transmission of the above "
             "information to the pharmacy for dispensing. The two-factor authentication protocol "
             "may only be completed by the practitioner whose name and DEA registration number "
             "appear above.")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("devstack-epcs"),
                       idp_host="localhost") as running:
        yield running


# -- the stack's database (set-up and checks) ----------------------------------------------
def _run(stack: Stack, *statements: str, **params: object) -> list:
    engine = sa.create_engine(stack.database)
    try:
        with engine.begin() as conn:
            rows: list = []
            for statement in statements:
                result = conn.execute(sa.text(statement), params)
                if result.returns_rows:
                    rows = list(result)
            return rows
    finally:
        engine.dispose()


def _grant(stack: Stack, username: str) -> None:
    _run(stack, "INSERT INTO epcs_permissions (user_id, proposed_by, proposed_at, approved_by,"
         " approved_at) SELECT u.id, a.id, :now, NULL, :now FROM users u, users a "
         "WHERE u.username = :who AND a.username = 'idp.admin'",
         now=clock.now(), who=username)


def _sms_only(stack: Stack, username: str) -> None:
    _run(stack, "DELETE FROM mfa_factors WHERE user_id = (SELECT id FROM users WHERE "
         "username = :who)",
         "INSERT INTO mfa_factors (user_id, kind, label, created_at, confirmed_at, destination,"
         " sign_count, user_verified, clone_warning) SELECT id, 'sms', 'Phone', :now, :now,"
         " '+15555550123', 0, false, false FROM users WHERE username = :who",
         now=clock.now(), who=username)


def _last_sms(stack: Stack) -> str:
    [(body,)] = _run(stack, "SELECT body FROM sms_outbox ORDER BY id DESC LIMIT 1")
    return re.search(r"\b(\d{6})\b", body).group(1)


# -- the browser ---------------------------------------------------------------------------
def _context(browser: Browser, problems: list[str]) -> tuple[BrowserContext, Page]:
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 500 else None)
    return context, page


def _password(page: Page, stack: Stack, username: str) -> None:
    idp = stack.urls["IdP"]
    page.wait_for_url(f"{idp}/login?**")
    page.get_by_label("Username or NPI").fill(username)
    page.get_by_label("Password").fill(stack.password(username))
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"{idp}/mfa/challenge")


def _after_second_factor(page: Page, stack: Stack) -> None:
    page.wait_for_load_state()
    if page.url.startswith(f"{stack.urls['IdP']}/account/acknowledge"):
        page.locator("#acknowledge").check()
        page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{stack.urls['EHR']}/")


def _sign_in_with_app(page: Page, stack: Stack, username: str) -> None:
    page.goto(f"{stack.urls['EHR']}/")
    page.get_by_role("button", name="Sign in").click()
    _password(page, stack, username)
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(stack.totp_secret(username)).now())
    page.get_by_role("button", name="Verify").click()
    stack.forget_totp_use(username)
    _after_second_factor(page, stack)


def _sign_in_with_sms(page: Page, stack: Stack, username: str) -> None:
    page.goto(f"{stack.urls['EHR']}/")
    page.get_by_role("button", name="Sign in").click()
    _password(page, stack, username)
    expect(page.get_by_label(re.compile("Code sent by text message"))).to_be_visible()
    assert_accessible(page, "MFA challenge: text-message code")
    page.get_by_label(re.compile("Code sent by text message")).fill(_last_sms(stack))
    page.get_by_role("button", name="Verify").click()
    _after_second_factor(page, stack)


def _press_sign(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.urls['EHR']}/prescriptions/controlled/")
    expect(page.get_by_text("Fictionalcodone 5 mg")).to_be_visible()
    page.get_by_role("button", name="Sign controlled-substance prescriptions").click()


def _expect_prescriptions(page: Page) -> None:
    """1311.140(a)(3)-(4): each prescription's data and the statement on the prompt page."""
    shown = page.locator("article.prescription")
    expect(shown).to_have_count(2)
    for rx_id, drug, strength, quantity, refills in (
            ("RX-9002", "Fictionalcodone hydrochloride", "5 mg", "12 (twelve) tablets", "0"),
            ("RX-9003", "Imaginazepam", "1 mg", "10 (ten) tablets", "1")):
        item = page.locator(f'article[data-prescription-id="{rx_id}"]')
        expect(item.locator(".rx-patient-name")).to_have_text("Eleanor Whitfield")
        expect(item.locator(".rx-patient-address")).to_have_text(
            "42 Harbor Lane, Springfield, IL 62704")
        expect(item.locator(".rx-drug-name")).to_have_text(drug)
        expect(item.locator(".rx-strength")).to_have_text(strength)
        expect(item.locator(".rx-dosage-form")).to_have_text("tablet")
        expect(item.locator(".rx-quantity")).to_have_text(quantity)
        expect(item.locator(".rx-directions")).not_to_be_empty()
        expect(item.locator(".rx-refills")).to_have_text(refills)
        expect(item.locator(".rx-prescriber-name")).to_have_text("Alex Rivera")
        expect(item.locator(".rx-prescriber-address")).to_contain_text("100 Main Street")
        expect(item.locator(".rx-dea-number")).to_have_text("AR1234563")
    expect(page.locator("#epcs-statement")).to_have_text(STATEMENT)


def test_controlled_substance_signing_needs_the_permission_and_a_security_key(
        stack: Stack, browser: Browser):
    idp, ehr = stack.urls["IdP"], stack.urls["EHR"]
    problems: list[str] = []

    # 1. np.chen, no EPCS permission: the EHR refuses before any ceremony.
    context, page = _context(browser, problems)
    _sign_in_with_app(page, stack, "np.chen")
    page.get_by_role("link", name="Sign a controlled-substance prescription").click()
    expect(page.get_by_role("alert")).to_contain_text("does not hold the EPCS permission")
    expect(page.get_by_role("button", name="Sign controlled-substance prescriptions")
           ).to_have_count(0)
    context.close()

    # 2. np.chen with the permission, signing in by text message: the IdP refuses.
    _grant(stack, "np.chen")
    _sms_only(stack, "np.chen")
    context, page = _context(browser, problems)
    _sign_in_with_sms(page, stack, "np.chen")
    _press_sign(page, stack)
    page.wait_for_url(f"{ehr}/callback?**")
    assert "error=unmet_authentication_requirements" in page.url
    expect(page.get_by_role("heading", name="Controlled-substance signing refused")
           ).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("text messages (SMS)")
    expect(page.get_by_role("alert")).to_contain_text("Enroll a security key or biometrics")
    context.close()

    # 3. dr.rivera with the permission and only the authenticator app: refused, not looped.
    _grant(stack, "dr.rivera")
    context, page = _context(browser, problems)
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    authenticator = cdp.send("WebAuthn.addVirtualAuthenticator",
                             {"options": AUTHENTICATOR})["authenticatorId"]
    _sign_in_with_app(page, stack, "dr.rivera")
    _press_sign(page, stack)
    page.wait_for_url(f"{ehr}/callback?**")
    assert "error=unmet_authentication_requirements" in page.url
    expect(page.get_by_role("alert")).to_contain_text(
        "This account has no security key or biometrics set up")
    expect(page.get_by_role("alert")).to_contain_text("authenticator-app codes")

    # He enrolls a security key at the IdP (recently signed in: no re-authentication) ...
    page.get_by_role("link", name="Manage your sign-in methods at the identity provider").click()
    page.wait_for_url(f"{idp}/mfa/factors")
    page.goto(f"{idp}/mfa/enroll/webauthn")
    page.get_by_label("Name for this key (optional)").fill("EPCS key")
    page.get_by_role("button", name="Add security key or biometrics").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    assert len(cdp.send("WebAuthn.getCredentials",
                        {"authenticatorId": authenticator})["credentials"]) == 1

    # ... and signs both prescriptions in one ceremony: the IdP shows each one and the DEA
    # statement, asks for the password, then the key (the data still on screen).
    _press_sign(page, stack)
    page.wait_for_url(f"{idp}/epcs/ceremony/**")
    # Pushed (PAR): the browser carries only the reference to the request, never the data.
    next_url = _run(stack, "SELECT next_url FROM epcs_ceremonies")[0][0]
    assert "request_uri=" in next_url and "authorization_details" not in next_url
    expect(page.locator("#binding-message")).to_contain_text(RX)
    _expect_prescriptions(page)
    assert_accessible(page, "EPCS signing ceremony")
    page.get_by_label("Password").fill(stack.password("dr.rivera"))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{idp}/mfa/challenge")
    expect(page.locator("#binding-message")).to_contain_text(RX)
    _expect_prescriptions(page)
    expect(page.get_by_text("Use a recovery code")).to_have_count(0)
    assert_accessible(page, "EPCS signing ceremony: the security key step")
    page.get_by_role("button", name="Use security key or biometrics").click()
    page.wait_for_url(f"{ehr}/prescriptions/controlled/complete")
    expect(page.locator("#signed")).to_contain_text(
        "RX-9002 RX-9003 signed by Alex Rivera")
    expect(page.locator("#ceremony-acr")).to_have_text(EPCS)
    amr = page.locator("#ceremony-amr").inner_text().split()
    assert "hwk" in amr and "pwd" in amr and "otp" not in amr and "sms" not in amr

    # The access token carries the hash of exactly what the IdP showed and kept.
    [(details, details_hash)] = _run(
        stack, "SELECT authorization_details, details_sha256 FROM epcs_ceremonies "
        "WHERE details_sha256 IS NOT NULL")
    details = details if isinstance(details, list) else json.loads(details)
    assert [d["prescription_id"] for d in details] == list(PRESCRIPTIONS)
    canonical = json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert details_hash == hashlib.sha256(canonical.encode()).hexdigest()
    expect(page.locator("#ceremony-sha256")).to_have_text(details_hash)  # from the token

    # A quantity changed after signing: the EHR refuses to transmit to the pharmacy.
    page.get_by_label("Change the quantity of").select_option("RX-9003")
    page.get_by_label("New quantity").fill("100 (one hundred) tablets")
    page.get_by_role("button", name="Change quantity").click()
    page.wait_for_url(f"{ehr}/prescriptions/controlled/")
    expect(page.locator("#draft-RX-9003 .quantity")).to_contain_text("100 (one hundred)")
    page.get_by_role("button", name="Transmit to the pharmacy").click()
    page.wait_for_url(f"{ehr}/prescriptions/controlled/transmit")
    expect(page.get_by_role("alert")).to_contain_text("changed after they were signed")
    expect(page.locator("#transmitted")).to_have_count(0)

    # The result signs once: the completion page does not sign again.
    page.goto(f"{ehr}/prescriptions/controlled/complete")
    expect(page.get_by_role("alert")).to_contain_text("no signing ceremony was completed")
    context.close()

    audited = _run(stack, "SELECT event, detail FROM audit_events WHERE event LIKE 'epcs.%' "
                   "ORDER BY seq")
    kinds = [row[0] for row in audited]
    assert kinds.count("epcs.refused") == 2, kinds
    assert kinds[-3:] == ["epcs.ceremony_completed", "epcs.signed", "epcs.signed"], kinds
    details_of = [row[1] if isinstance(row[1], dict) else json.loads(row[1])
                  for row in audited[-3:]]
    assert details_of[0]["binding_message"] == RX + " RX-9003"
    assert details_of[0]["acr"] == EPCS and details_of[0]["factors"] == ["password", "webauthn"]
    assert [d["prescription_id"] for d in details_of[1:]] == list(PRESCRIPTIONS)
    assert all(len(d["sha256"]) == 64 and d["details_sha256"] == details_hash
               for d in details_of[1:])
    assert not problems, problems
