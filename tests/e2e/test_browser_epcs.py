"""Controlled-substance signing (DEA EPCS) in headless Chromium against the development stack
(`python -m clients.devstack`: IdP, portal and EHR under gunicorn), with Chromium's virtual
authenticator as the security key / platform biometrics.

- np.chen without the EPCS permission: the EHR refuses before any ceremony.
- np.chen with the permission but only a text-message factor (she signs in with an SMS code):
  the IdP refuses the ceremony and the EHR shows why (SMS does not count).
- dr.rivera with the permission and only the authenticator app: refused, the message names
  what is needed; he enrolls a security key for prescribing at the IdP (/epcs/keys:
  attestation "direct", cross-platform; Chromium's virtual authenticator attests "packed"
  with its batch certificate, which the stack's test policy trusts, see `chromium_anchor`),
  signs again: the EHR pushes its two
  controlled-substance prescriptions (PAR, authorization_details), the IdP shows each one's
  data (21 CFR 1311.140(a)(3)) and the DEA statement while asking for the password and the
  key, and the EHR signs with an ID token at acr epcs whose amr shows hwk and pwd and an
  access token carrying the prescriptions' SHA-256; each signature is audited with its hash.
  A quantity changed after signing: the EHR refuses to transmit to the pharmacy.

- 21 CFR 1311.115(b) in the browser: a virtual authenticator that makes synced passkeys
  (backup eligible) is refused at EPCS key enrolment and nothing is kept.

Set-up writes the stack's own database (test set-up only): the approved EPCS permission (the
two-admin console is tested in tests/integration/test_epcs.py) and np.chen's SMS factor; and
the stack's policy directory (IDP_POLICY_DIR): the shipped policies with epcs_keys.toml
trusting Chromium's virtual authenticator (its AAGUID and attestation certificate, read from a
registration in the test's browser before the stack starts).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pyotp
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, BrowserContext, Page, expect

from idp import clock
from idp.config import POLICY_DIR
from tests.e2e.axe import assert_accessible
from tests.e2e.test_devstack import Stack, running_stack

pytestmark = pytest.mark.e2e

AUTHENTICATOR = {"protocol": "ctap2", "transport": "usb", "hasResidentKey": True,
                 "hasUserVerification": True, "isUserVerified": True,
                 "automaticPresenceSimulation": True, "defaultBackupEligibility": False}
# A synced passkey: the same virtual authenticator making backup-eligible credentials.
SYNCED = {**AUTHENTICATOR, "defaultBackupEligibility": True, "defaultBackupState": True}
EPCS = "urn:healthidp:acr:epcs"
RX = "RX-9002"
PRESCRIPTIONS = ("RX-9002", "RX-9003")
# 21 CFR 1311.140(a)(4), as policies/epcs.toml words it
STATEMENT = ("By completing the two-factor authentication protocol at this time, you are "
             "legally signing the prescription(s) and authorizing the transmission of the above "
             "information to the pharmacy for dispensing. The two-factor authentication protocol "
             "may only be completed by the practitioner whose name and DEA registration number "
             "appear above.")


# Registers one credential with attestation "direct" on a page of a made-up https origin
# (answered by the test itself through page.route: no server) and returns the attestation
# object, base64.
PROBE = """async () => {
  const credential = await navigator.credentials.create({publicKey: {
    rp: {id: "probe.test", name: "probe"},
    user: {id: new Uint8Array([1]), name: "probe", displayName: "probe"},
    challenge: new Uint8Array(32), pubKeyCredParams: [{type: "public-key", alg: -7}],
    attestation: "direct",
    authenticatorSelection: {authenticatorAttachment: "cross-platform",
                             userVerification: "required"}}});
  let text = "";
  for (const byte of new Uint8Array(credential.response.attestationObject)) {
    text += String.fromCharCode(byte);
  }
  return btoa(text);
}"""


def chromium_anchor(browser: Browser) -> tuple[str, bytes]:
    """The AAGUID and attestation certificate (PEM) of Chromium's virtual authenticator, read
    from a "packed" attestation it makes. The certificate is self-signed and re-issued at
    each registration with the same name and key: as a trust anchor (a name and a key) it
    covers the registrations the test makes later."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.route("https://probe.test/**", lambda route: route.fulfill(
            status=200, content_type="text/html", body="<!doctype html><title>probe</title>"))
        page.goto("https://probe.test/")
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
        attestation = cbor2.loads(base64.b64decode(page.evaluate(PROBE)))
    finally:
        context.close()
    assert attestation["fmt"] == "packed", attestation["fmt"]
    aaguid = str(uuid.UUID(bytes=attestation["authData"][37:53]))
    [certificate] = attestation["attStmt"]["x5c"]
    return aaguid, x509.load_der_x509_certificate(certificate).public_bytes(
        serialization.Encoding.PEM)


def policy_dir_trusting(directory: Path, aaguid: str, anchor: bytes) -> Path:
    """The shipped policies, with epcs_keys.toml trusting the virtual authenticator."""
    shutil.copytree(POLICY_DIR, directory)
    (directory / "chromium-virtual-authenticator.pem").write_bytes(anchor)
    keys = (directory / "epcs_keys.toml").read_text()
    keys = keys.replace("roots = []", 'roots = ["chromium-virtual-authenticator.pem"]', 1)
    keys += f'"{aaguid}" = "Chromium virtual authenticator (test only)"\n'
    (directory / "epcs_keys.toml").write_text(keys)
    return directory


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Stack]:
    aaguid, anchor = chromium_anchor(browser)
    policies = policy_dir_trusting(tmp_path_factory.mktemp("epcs-policy") / "policies",
                               aaguid, anchor)
    with running_stack(tmp_path_factory.mktemp("devstack-epcs"), idp_host="localhost",
                       extra_env={"IDP_POLICY_DIR": str(policies)}) as running:
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
    expect(page.get_by_role("alert")).to_contain_text("Enroll a security key for prescribing")
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
        "This account has no security key enrolled for prescribing")
    expect(page.get_by_role("alert")).to_contain_text("authenticator-app codes")

    # He enrolls a security key for prescribing at the IdP (recently signed in: no
    # re-authentication): attestation "direct", verified against the test policy's anchor.
    page.get_by_role("link", name="Manage your sign-in methods at the identity provider").click()
    page.wait_for_url(f"{idp}/mfa/factors")
    page.goto(f"{idp}/epcs/keys")
    page.get_by_label("Name for this key (optional)").fill("EPCS key")
    page.get_by_role("button", name="Add a security key for prescribing").click()
    page.wait_for_url(f"{idp}/epcs/keys?added=1")
    expect(page.locator("#epcs-key-added")).to_be_visible()
    expect(page.locator("#epcs-keys")).to_contain_text("Chromium virtual authenticator")
    assert len(cdp.send("WebAuthn.getCredentials",
                        {"authenticatorId": authenticator})["credentials"]) == 1
    [(fmt, verified, eligible, attachment)] = _run(
        stack, "SELECT k.attestation_fmt, k.attestation_verified, k.backup_eligible, "
        "k.attachment FROM epcs_keys k JOIN users u ON u.id = k.user_id "
        "WHERE u.username = 'dr.rivera'")
    assert (fmt, bool(verified), bool(eligible), attachment) == \
        ("packed", True, False, "cross-platform")

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


def test_a_synced_passkey_is_refused_as_an_epcs_key(stack: Stack, browser: Browser):
    """1311.115(b): a backup-eligible credential (a synced passkey) of the very model the
    policy trusts is refused at EPCS key enrolment, in words; nothing is kept."""
    idp = stack.urls["IdP"]
    problems: list[str] = []
    context, page = _context(browser, problems)
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    synced = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": SYNCED})["authenticatorId"]
    page.goto(f"{idp}/epcs/keys")
    page.wait_for_url(f"{idp}/login?**")
    page.get_by_label("Username or NPI").fill("dr.rivera")
    page.get_by_label("Password").fill(stack.password("dr.rivera"))
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"{idp}/mfa/challenge")
    # The authenticator app, whichever factor the page offers first (an EPCS key enrolled by
    # the other test comes first when it ran before).
    [(app,)] = _run(stack, "SELECT f.id FROM mfa_factors f JOIN users u ON u.id = f.user_id "
                    "WHERE u.username = 'dr.rivera' AND f.kind = 'totp'")
    page.goto(f"{idp}/mfa/challenge?factor={app}")
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(stack.totp_secret("dr.rivera")).now())
    page.get_by_role("button", name="Verify").click()
    stack.forget_totp_use("dr.rivera")
    page.wait_for_load_state()
    if page.url.startswith(f"{idp}/account/acknowledge"):
        page.locator("#acknowledge").check()
        page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{idp}/epcs/keys")
    before = _run(stack, "SELECT count(*) FROM epcs_keys")[0][0]
    page.get_by_role("button", name="Add a security key for prescribing").click()
    expect(page.get_by_role("alert")).to_contain_text("This is a synced passkey")
    assert _run(stack, "SELECT count(*) FROM epcs_keys")[0][0] == before
    [(detail,)] = _run(stack, "SELECT detail FROM audit_events WHERE event = 'epcs.key_refused'"
                       " ORDER BY seq DESC LIMIT 1")
    detail = detail if isinstance(detail, dict) else json.loads(detail)
    assert detail["reason"] == "synced" and detail["backup_eligible"] is True
    assert detail["fmt"] == "packed"  # attested, the model listed: refused for BE alone
    # The authenticator made the credential; the IdP did not keep it.
    assert len(cdp.send("WebAuthn.getCredentials",
                        {"authenticatorId": synced})["credentials"]) == 1
    context.close()
    assert not problems, problems
