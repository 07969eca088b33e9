"""The README's ten-minute tour in Chromium against the stack `make run` starts
(clients/devstack on free ports, every app on http://localhost): forgot password followed
through the dev mailbox's web page; onboarding → the approval mail in the mailbox → the first
sign-in → the portal; a passkey added with Chromium's virtual authenticator and used to sign in.

axe-core checks every IdP, portal and EHR page on the way (tests/e2e/axe.py), the portal's
and the EHR's in Spanish too (a browser whose language is Spanish). With SCREENSHOTS_DIR set
(`make screenshots`), the main pages are saved there as PNG files."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.e2e.axe import assert_accessible
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_devstack import Stack, running_stack

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "Harbor-Lantern-Quill-58?"
CHOSEN = "Granite-Orchid-Velvet-93?"
NPI = "1245319599"
APPLICANT = "maria.lopez@clinic.example"
AUTHENTICATOR = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                 "hasUserVerification": True, "isUserVerified": True,
                 "automaticPresenceSimulation": True}
MOBILE = {"login", "mfa-challenge", "portal-dashboard", "onboarding-apply-errors"}
SHOTS = Path(os.environ["SCREENSHOTS_DIR"]) if os.environ.get("SCREENSHOTS_DIR") else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("devstack-tour")) as running:
        yield running


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Tour:
    """One browser context (one person's browser) with its console errors collected."""

    def __init__(self, browser: Browser, locale: str | None = None) -> None:
        self.context: BrowserContext = browser.new_context(
            viewport={"width": 1100, "height": 800}, **({"locale": locale} if locale else {}))
        self.context.set_default_timeout(20_000)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.refused: list[str] = []  # URLs a form is answered 400/401 from on purpose
        self.page.on("console", lambda msg: self.problems.append(
            f"{msg.text} ({msg.location.get('url')})") if msg.type == "error" and
            not str(msg.location.get("url", "")).endswith("/favicon.ico") else None)
        self.page.on("pageerror", lambda exc: self.problems.append(str(exc)))

    def check(self, name: str) -> None:
        """axe on the page as it is now; its screenshot under `make screenshots`."""
        assert_accessible(self.page, name)
        if SHOTS is not None:
            SHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
            if name in MOBILE:  # the narrow layout too (a phone's width)
                self.page.set_viewport_size({"width": 390, "height": 800})
                self.page.screenshot(path=str(SHOTS / f"{name}-mobile.png"), full_page=True)
                self.page.set_viewport_size({"width": 1100, "height": 800})

    def close(self) -> None:
        self.context.close()
        left = [p for p in self.problems if not ("status of 40" in p and any(
            p.endswith(f"({url})") for url in self.refused))]
        assert not left, left


def _open_mail(tour: Tour, stack: Stack, recipient: str, subject: str) -> None:
    """The dev mailbox's web page: the newest mail with this subject to this recipient."""
    page = tour.page
    for _ in range(50):
        page.goto(f"{stack.urls['Mail']}/?to={recipient}")
        link = page.get_by_role("link", name=subject)
        if link.count():
            link.first.click()
            expect(page.get_by_role("heading", name=subject)).to_be_visible()
            return
        page.wait_for_timeout(200)
    pytest.fail(f"no mail {subject!r} to {recipient} in the dev mailbox", pytrace=False)


def _password(tour: Tour, stack: Stack, username: str, password: str) -> None:
    page = tour.page
    page.wait_for_url(f"{stack.urls['IdP']}/login?**")
    tour.check("login")
    page.get_by_label("Username or NPI").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def _authenticator_code(tour: Tour, stack: Stack, secret: str, username: str) -> None:
    page = tour.page
    page.wait_for_url(f"{stack.urls['IdP']}/mfa/challenge*")
    if page.get_by_label("Code from your authenticator app").count() == 0:
        page.get_by_role("link", name=re.compile("Authenticator app")).click()
    tour.check("mfa-challenge")
    page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Verify").click()
    stack.forget_totp_use(username)


def _acknowledge_if_asked(tour: Tour, stack: Stack) -> None:
    page = tour.page
    page.wait_for_load_state()
    if page.url.startswith(f"{stack.urls['IdP']}/account/acknowledge"):
        tour.check("acknowledgment")
        page.get_by_label("I have read and accept the statement above").check()
        page.get_by_role("button", name="Continue").click()


def test_forgot_password_through_the_dev_mailbox_then_the_portal(stack: Stack,
                                                                  chromium: Browser):
    tour = Tour(chromium)
    page, idp, portal = tour.page, stack.urls["IdP"], stack.urls["Portal"]
    page.goto(f"{portal}/")
    tour.check("portal-welcome")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{idp}/login?**")
    page.get_by_role("link", name="Forgot password?").click()
    tour.check("forgot-password")
    page.get_by_label("Username, NPI or email address").fill("np.chen")
    page.get_by_role("button", name="Email me a reset link").click()
    expect(page.get_by_role("status").or_(page.get_by_role("heading")).first).to_be_visible()
    tour.check("forgot-password-sent")

    _open_mail(tour, stack, "np.chen@hospital.example", "Reset your password")
    page.locator(f'#links a[href^="{idp}/password/reset/"]').click()
    page.wait_for_url(f"{idp}/password/reset/**")
    tour.check("reset-password")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Confirm new password", exact=True).fill(NEW_PASSWORD)
    page.get_by_role("button", name="Save password").click()
    expect(page.get_by_role("heading", name="Password changed")).to_be_visible()
    tour.check("reset-done")

    # The page leads to the portal (the home relying party), whose sign-in takes the new one.
    page.get_by_role("link", name="Sign in to Provider Portal").click()
    _password(tour, stack, "np.chen", NEW_PASSWORD)
    _authenticator_code(tour, stack, stack.totp_secret("np.chen"), "np.chen")
    _acknowledge_if_asked(tour, stack)
    page.wait_for_url(f"{portal}/")
    expect(page.get_by_text("Welcome, Jordan Chen")).to_be_visible()
    tour.check("portal-dashboard")

    # The EHR signs in without a click (prompt=none over the SSO session).
    page.get_by_role("link", name="Open the EHR").click()
    page.wait_for_url(f"{stack.urls['EHR']}/")
    expect(page.get_by_role("heading", name="Patients")).to_be_visible()
    tour.check("ehr-patients")
    page.get_by_role("button", name="Logout").click()
    expect(page.get_by_role("button", name="Sign in again")).to_be_visible()
    tour.check("ehr-signed-out")
    tour.close()
    _portal_and_ehr_in_spanish(stack, chromium, "np.chen", NEW_PASSWORD, "Jordan Chen")


def _in_spanish(page: Page, what: str, text: str) -> None:
    """The page says <html lang="es">, shows a known Spanish text, and passes axe."""
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.get_by_text(text).first).to_be_visible()
    assert_accessible(page, f"{what} (es)")


def _portal_and_ehr_in_spanish(stack: Stack, chromium: Browser, username: str, password: str,
                               name: str) -> None:
    """The same person in a Spanish browser (Accept-Language es): the portal's welcome page
    and dashboard, the IdP's sign-in (asked for with ui_locales=es), the EHR's patient list
    and its signed-out page, all in Spanish with zero axe violations."""
    idp, portal, ehr = stack.urls["IdP"], stack.urls["Portal"], stack.urls["EHR"]
    tour = Tour(chromium, locale="es-ES")
    page = tour.page
    page.goto(f"{portal}/")
    _in_spanish(page, "portal welcome", "Agendas, resultados de laboratorio")
    page.get_by_role("button", name="Iniciar sesión").click()
    page.wait_for_url(f"{idp}/login?**")
    assert "ui_locales%3Des" in page.url, page.url
    expect(page.locator("html")).to_have_attribute("lang", "es")
    page.get_by_label("Nombre de usuario o NPI").fill(username)
    page.get_by_label("Contraseña", exact=True).fill(password)
    page.get_by_role("button", name="Iniciar sesión", exact=True).click()
    page.wait_for_url(f"{idp}/mfa/challenge*")
    code = page.get_by_label("Código de su aplicación de autenticación")
    if code.count() == 0:
        page.get_by_role("link", name=re.compile("Aplicación de autenticación")).click()
    code.fill(pyotp.TOTP(stack.totp_secret(username)).now())
    page.get_by_role("button", name="Verificar").click()
    stack.forget_totp_use(username)
    page.wait_for_load_state()
    if page.url.startswith(f"{idp}/account/acknowledge"):
        page.get_by_label("He leído y acepto la declaración anterior").check()
        page.get_by_role("button", name="Continuar").click()
    page.wait_for_url(f"{portal}/")
    _in_spanish(page, "portal dashboard", f"Le damos la bienvenida, {name}")
    page.get_by_role("link", name="Abrir el EHR").click()
    page.wait_for_url(f"{ehr}/")
    expect(page.get_by_role("heading", name="Pacientes")).to_be_visible()
    _in_spanish(page, "EHR patients", "Fecha de nacimiento")
    page.get_by_role("button", name="Cerrar sesión").click()
    expect(page.get_by_role("button", name="Volver a iniciar sesión")).to_be_visible()
    _in_spanish(page, "EHR signed out", "Ha cerrado sesión.")
    tour.close()


def test_onboarding_approval_mail_first_sign_in_then_the_portal(stack: Stack,
                                                                chromium: Browser):
    idp, portal = stack.urls["IdP"], stack.urls["Portal"]
    expires = (date.today() + timedelta(days=400)).isoformat()
    applicant = Tour(chromium)
    page = applicant.page
    page.goto(f"{idp}/login")
    page.get_by_role("link", name="New Provider Registration").click()
    applicant.check("onboarding-apply")
    page.get_by_label("Legal first name").fill("Maria")
    page.get_by_label("Legal last name").fill("Lopez")
    page.get_by_label("Email address").fill(APPLICANT)
    page.get_by_label("Phone number").fill("(650) 253-0000")
    page.get_by_label("Role applied for").select_option(label="Physician")
    page.get_by_label("NPI (National Provider Identifier)").fill("1245319598")  # a typo
    applicant.refused.append(f"{idp}/onboarding/apply")
    page.get_by_label("License state or territory").select_option(label="California")
    page.get_by_label("License number").fill("A123456")
    page.get_by_label("License expiry date").fill(expires)
    page.get_by_label("Facility").select_option(label="Fictional General Hospital")
    page.get_by_label("Department").select_option(
        label="Fictional General Hospital · Internal Medicine")
    page.get_by_role("button", name="Submit application").click()
    # One error summary, focused, linking to the field, which names its hint and its error.
    expect(page.locator("#error-summary")).to_be_focused()
    npi = page.get_by_label("NPI (National Provider Identifier)")
    expect(npi).to_have_attribute("aria-invalid", "true")
    expect(npi).to_have_attribute("aria-describedby", "npi-hint npi-error")
    applicant.check("onboarding-apply-errors")
    page.locator("#error-summary a[href='#npi']").click()
    expect(npi).to_be_focused()
    npi.fill(NPI)
    page.get_by_role("button", name="Submit application").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    _open_mail(applicant, stack, APPLICANT,
               "Confirm your email to complete your provider registration")
    page.locator(f'#links a[href^="{idp}/onboarding/verify/"]').click()
    page.get_by_role("button", name="Confirm my email").click()
    expect(page.get_by_role("heading", name="Application received")).to_be_visible()
    applicant.check("onboarding-received")

    # The administrator approves in the console.
    admin = Tour(chromium)
    page = admin.page
    page.goto(f"{idp}/admin/verifications")
    _password(admin, stack, "idp.admin", stack.password("idp.admin"))
    _authenticator_code(admin, stack, stack.totp_secret("idp.admin"), "idp.admin")
    _acknowledge_if_asked(admin, stack)
    expect(page.get_by_role("heading", name="Verification queue")).to_be_visible()
    admin.check("admin-verifications")
    page.locator("table.verifications tr", has_text="Maria Lopez").get_by_role(
        "link", name="Maria Lopez").click()
    expect(page.get_by_role("heading", name="Application of Maria Lopez")).to_be_visible()
    admin.check("admin-application")
    page.get_by_label("Role to grant").select_option("physician")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#status")).to_have_text("approved")
    admin.close()

    # The approval mail, in the dev mailbox, leads to the portal's sign-in.
    page = applicant.page
    _open_mail(applicant, stack, APPLICANT, "Your provider account is ready")
    text = page.locator("#text").inner_text()
    username = re.search(r"Username: (\S+)", text).group(1)
    temporary = re.search(r"Temporary password: (\S+)", text).group(1)
    page.locator(f'#links a[href="{portal}/login"]').click()
    _password(applicant, stack, username, temporary)
    page.wait_for_url(f"{idp}/mfa/enroll*")
    applicant.check("mfa-enroll")
    page.get_by_role("link", name="Authenticator app").click()
    secret = page.locator("#totp-secret").inner_text().strip()
    applicant.check("mfa-enroll-totp")
    page.get_by_label("Enter the 6-digit code the app shows").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    applicant.check("recovery-codes")
    page.get_by_role("link", name="I have saved my codes, continue").click()
    expect(page.get_by_role("heading", name="Set a new password")).to_be_visible()
    applicant.check("forced-password-change")
    page.get_by_label("New password", exact=True).fill(CHOSEN)
    page.get_by_label("Confirm new password", exact=True).fill(CHOSEN)
    page.get_by_role("button", name="Save password").click()
    _acknowledge_if_asked(applicant, stack)
    page.wait_for_url(f"{portal}/")
    expect(page.get_by_text("Welcome, Maria Lopez")).to_be_visible()
    applicant.close()


def test_a_passkey_on_localhost_with_the_virtual_authenticator(stack: Stack,
                                                               chromium: Browser):
    idp, portal = stack.urls["IdP"], stack.urls["Portal"]
    tour = Tour(chromium)
    page = tour.page
    cdp = tour.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    page.goto(f"{idp}/login?next=/mfa/enroll/webauthn")
    tour.refused.append(f"{idp}/login")
    _password(tour, stack, "dr.rivera", "not-the-password")
    expect(page.locator("#login-error")).to_be_focused()
    expect(page.get_by_label("Username or NPI")).to_have_attribute("aria-invalid", "true")
    tour.check("login-error")
    page.goto(f"{idp}/login?next=/mfa/enroll/webauthn")
    _password(tour, stack, "dr.rivera", stack.password("dr.rivera"))
    _authenticator_code(tour, stack, stack.totp_secret("dr.rivera"), "dr.rivera")
    _acknowledge_if_asked(tour, stack)
    expect(page.get_by_role("heading", name="Add a security key or biometrics")).to_be_visible()
    tour.check("passkey-add")
    page.get_by_label("Name for this key (optional)").fill("Work laptop")
    page.get_by_role("button", name="Add security key or biometrics").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    page.get_by_role("link", name="I have saved my codes, continue").click()
    page.goto(f"{idp}/account")
    tour.check("account")
    page.goto(f"{idp}/account/activity")
    tour.check("account-activity")
    page.goto(f"{idp}/mfa/factors")
    expect(page.get_by_text("Work laptop")).to_be_visible()
    tour.check("sign-in-methods")

    # A new browser session (same authenticator): the portal's sign-in with the passkey alone.
    tour.context.clear_cookies()
    page.goto(f"{portal}/")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{idp}/login?**")
    page.get_by_role("button", name=re.compile("passkey", re.I)).click()
    _acknowledge_if_asked(tour, stack)
    page.wait_for_url(f"{portal}/")
    expect(page.get_by_text("Welcome, Alex Rivera")).to_be_visible()
    tour.close()


ADMIN_SHOTS = {"/admin/": "admin-console", "/admin/clients/new": "admin-client-new",
               "/admin/users": "admin-users", "/admin/alerts": "admin-alerts"}
ACCOUNT_PAGES = ("/account", "/account/activity", "/account/settings", "/account/phone",
                 "/account/email", "/account/password", "/account/sessions", "/mfa/factors",
                 "/mfa/enroll", "/mfa/enroll/totp", "/mfa/enroll/sms", "/mfa/enroll/email",
                 "/mfa/enroll/webauthn")


def test_every_admin_and_account_page_passes_axe(stack: Stack, chromium: Browser):
    """Every page the admin console links to (three levels deep), and the account and
    sign-in-method pages: zero WCAG 2.1 A/AA violations."""
    idp = stack.urls["IdP"]
    tour = Tour(chromium)
    page = tour.page
    page.goto(f"{idp}/login?next=/admin/")
    _password(tour, stack, "idp.admin", stack.password("idp.admin"))
    _authenticator_code(tour, stack, stack.totp_secret("idp.admin"), "idp.admin")
    _acknowledge_if_asked(tour, stack)
    page.wait_for_url(f"{idp}/admin/**")
    seen: set[str] = set()
    queue = [page.url.split("#")[0]]
    for _depth in range(3):
        found: list[str] = []
        for url in queue:
            if url in seen or len(seen) >= 80:
                continue
            seen.add(url)
            response = page.goto(url)
            assert response is not None and response.status == 200, url
            assert_accessible(page, url)
            shot = ADMIN_SHOTS.get(url.removeprefix(idp))
            if SHOTS is not None and shot:
                page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
            for href in page.eval_on_selector_all(
                    "a[href]", "els => els.map(e => e.href.split('#')[0])"):
                if href.startswith(f"{idp}/admin") and href not in seen and not re.search(
                        r"\.(jsonl|json|csv|pdf|zip)(\?|$)|format=|export|download", href):
                    found.append(href)
        queue = sorted(set(found))
    assert len(seen) >= 8, seen  # the console's pages were reached
    print(f"axe: {len(seen)} admin pages", sorted(seen))
    checked = 0
    for path in ACCOUNT_PAGES:
        tour.refused.append(f"{idp}{path}")  # a method the admin role may not use: 403
        response = page.goto(f"{idp}{path}")
        assert response is not None and response.status < 500, path
        if response.status == 200:
            assert_accessible(page, path)
            checked += 1
    assert checked >= 8, checked
    tour.close()


def test_code_factor_enrolment_and_challenge_pages_pass_axe(stack: Stack, chromium: Browser):
    """Text-message and email codes as a person meets them: the enrolment pages (the number,
    the code sent), the challenge for an email code, and its wrong-code state; axe on each."""
    idp = stack.urls["IdP"]
    tour = Tour(chromium)
    page = tour.page
    page.goto(f"{idp}/login?next=/mfa/enroll/sms")
    _password(tour, stack, "staff.okafor", stack.password("staff.okafor"))
    _authenticator_code(tour, stack, stack.totp_secret("staff.okafor"), "staff.okafor")
    _acknowledge_if_asked(tour, stack)
    page.wait_for_url(f"{idp}/mfa/enroll/sms*")
    tour.check("mfa-enroll-sms")
    page.get_by_label("Mobile phone number").fill("(202) 555-0123")
    page.get_by_role("button", name="Send a code").click()
    expect(page.get_by_label(re.compile("Code sent to"))).to_be_visible()
    tour.check("mfa-enroll-sms-code")

    page.goto(f"{idp}/mfa/enroll/email")
    tour.check("mfa-enroll-email")
    page.get_by_role("button", name="Send a code").click()
    expect(page.get_by_label(re.compile("Code sent to"))).to_be_visible()
    _open_mail(tour, stack, "staff.okafor@hospital.example", "Your sign-in code")
    code = re.search(r"\b(\d{6})\b", page.locator("#text").inner_text()).group(1)
    page.goto(f"{idp}/mfa/enroll/email")
    page.get_by_role("button", name="Send a code").click()  # the same address: code kept
    expect(page.get_by_text("just now")).to_be_visible()
    page.get_by_label(re.compile("Code sent to")).fill(code)
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()

    # Sign in again choosing the email code: the challenge page, then a wrong code.
    tour.context.clear_cookies()
    page.goto(f"{idp}/login?next=/account")
    _password(tour, stack, "staff.okafor", stack.password("staff.okafor"))
    page.wait_for_url(f"{idp}/mfa/challenge*")
    page.get_by_role("link", name=re.compile("Email code")).click()
    expect(page.get_by_label(re.compile("Code sent by email"))).to_be_visible()
    tour.check("mfa-challenge-email")
    tour.refused.append(f"{idp}/mfa/challenge")
    page.get_by_label(re.compile("Code sent by email")).fill("000000" if code != "000000"
                                                            else "111111")
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("#challenge-error")).to_be_focused()
    tour.check("mfa-challenge-error")
    tour.close()
