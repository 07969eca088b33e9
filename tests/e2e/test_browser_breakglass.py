"""Break-glass end to end in headless Chromium: a clinician opens a chart outside her care team
in the EHR, is refused, breaks the glass (the IdP's request page: reason, justification,
password, then her authenticator app again), and the EHR opens the chart under an emergency
banner; security staff get an email over real SMTP; a privacy officer reviews the episode in
the admin console; when the entitlement runs out (time moved with the test clock) the EHR
refuses the chart again while she stays signed in.

The IdP and the EHR run in this process (threaded WSGI servers on loopback) so that moving
idp.clock and the EHR's clock moves them both; the browser, the HTTP between the apps, the
database and the SMTP server are real."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from clients import ehr as ehr_package
from clients.ehr import emergency
from idp import create_app
from idp.audit.models import AuditEvent
from idp.breakglass import service
from idp.config import Settings
from idp.demo import CLIENTS
from idp.extensions import db
from idp.oidc.clients import create_client
from tests.conftest import TEST_POLICY, free_port
from tests.helpers import PASSWORD, TOTP_SECRETS, forget_totp_use, make_user

pytestmark = pytest.mark.e2e
WHY = "Patient collapsed in the corridor; her own clinician is off site tonight."


@dataclass
class Live:
    idp: str
    ehr: str


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:   # request lines hold codes: not logged
        return None


def _serve(app, port: int) -> tuple[object, threading.Thread]:
    """wsgiref's server, threaded: it closes each response (running the IdP's work after the
    response) as soon as it is sent (werkzeug's development server first waits for the
    browser to close the connection)."""
    server = make_server("127.0.0.1", port, app, server_class=_Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def live(ctx, env, tmp_path) -> Iterator[Live]:
    idp_port, ehr_port = free_port(), free_port()
    idp_url, ehr_url = f"http://localhost:{idp_port}", f"http://127.0.0.1:{ehr_port}"
    ehr_client = create_client(name="EHR", client_id="ehr", first_party=True,
                               redirect_uris=[f"{ehr_url}/callback"],
                               scope=CLIENTS["ehr"].scope)  # the demo EHR's registration
    db.session.commit()
    idp_app = create_app(Settings.from_env({**env, "IDP_ISSUER": idp_url,
                                            "EHR_AUDIENCE": ehr_url}),
                         policy_overrides=TEST_POLICY)
    ehr_app = ehr_package.create_app({
        "IDP_ISSUER": idp_url, "EHR_URL": ehr_url, "EHR_CLIENT_ID": "ehr",
        "EHR_CLIENT_SECRET": ehr_client.client_secret, "EHR_AUDIENCE": ehr_url,
        "EHR_SECRET_KEY": "ehr-cookie-key-0123456789-abcdef", "EHR_STATE_DIR": str(tmp_path),
        "EHR_API": ehr_url})
    servers = [_serve(idp_app, idp_port), _serve(ehr_app, ehr_port)]
    try:
        yield Live(idp_url, ehr_url)
    finally:
        for server, thread in servers:
            server.shutdown()
            thread.join(10)


def _totp(page: Page, username: str) -> None:
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(TOTP_SECRETS[username]).now())
    page.get_by_role("button", name="Verify").click()
    page.wait_for_load_state()
    forget_totp_use(username)


def _sign_in(page: Page, live: Live, username: str) -> None:
    page.wait_for_url(f"{live.idp}/login?**")
    page.get_by_label("Username or NPI").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"{live.idp}/mfa/challenge")
    _totp(page, username)


def _wait_for_mail(mailbox, address: str) -> list:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not mailbox.to(address):
        time.sleep(0.1)
    return mailbox.to(address)


def test_break_glass_in_the_browser(live: Live, browser: Browser, mailbox, frozen,
                                    monkeypatch):
    make_user("dr.rivera", npi="1234567893")             # DEMO-0001, -0003, -0005 are hers
    make_user("sec.officer", role="security", npi=None)
    make_user("pat.privacy", role="privacy_officer", npi=None)
    monkeypatch.setattr(emergency, "now", lambda: time.time() + frozen.offset.total_seconds())
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
            if r.status >= 500 else None)

    page.goto(f"{live.ehr}/")
    page.get_by_role("button", name="Sign in").click()
    _sign_in(page, live, "dr.rivera")
    page.wait_for_url(f"{live.ehr}/")
    # her own patient opens; Jane Placeholder (np.chen's) does not
    page.goto(f"{live.ehr}/patients/DEMO-0003")
    expect(page.locator("#labs")).to_contain_text("Lipid panel")
    page.goto(f"{live.ehr}/patients/DEMO-0002")
    expect(page.locator("#not-on-team")).to_contain_text("not on your care team")

    # break the glass: the IdP's request page, then the second factor again
    page.get_by_role("button", name="Break the glass").click()
    page.wait_for_url(f"{live.idp}/breakglass/**")
    expect(page.locator("#breakglass-notice")).to_contain_text("60 minutes")
    page.get_by_label("Covering for the patient's clinician, who cannot be reached").check()
    page.get_by_label("Justification").fill(WHY)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{live.idp}/mfa/challenge")
    _totp(page, "dr.rivera")
    page.wait_for_url(f"{live.ehr}/patients/DEMO-0002")
    expect(page.locator("#emergency-banner")).to_contain_text("Emergency access")
    expect(page.locator("#labs")).to_contain_text("TSH")

    # security staff: the email arrived over SMTP; the episode is in the audit trail
    mails = _wait_for_mail(mailbox, "sec.officer@hospital.example")
    assert len(mails) == 1 and "dr.rivera" in mails[0]["Subject"]
    assert WHY in mailbox.body(mails[0])
    db.session.expire_all()
    assert db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "breakglass.started")).scalar_one().detail["reason"] == \
        "covering_clinician"

    # a privacy officer reviews it in the admin console
    officer = browser.new_context().new_page()
    officer.set_default_timeout(20_000)
    officer.goto(f"{live.idp}/admin/breakglass")
    _sign_in(officer, live, "pat.privacy")
    officer.wait_for_url(f"{live.idp}/admin/breakglass")
    episode = officer.locator("section.episode")
    expect(episode).to_have_count(1)
    expect(episode.locator(".justification")).to_have_text(WHY)
    episode.get_by_label("Appropriate use", exact=True).check()
    episode.get_by_label("Review note").fill("Confirmed with the ward: covering colleague.")
    episode.get_by_role("button", name="Record review").click()
    expect(officer.get_by_role("status")).to_have_text("Reviewed.")
    expect(officer.locator("table.breakglass-report tbody tr")).to_contain_text(
        ["pat.privacy"])

    # an hour later (the IdP session kept alive meanwhile): the entitlement is over, the
    # clinician still signed in, the chart refused again
    for _ in range(3):
        frozen.advance(1250)
        page.goto(f"{live.idp}/account")
        expect(page).to_have_url(f"{live.idp}/account")
    page.goto(f"{live.ehr}/patients/DEMO-0002")
    expect(page.locator("#not-on-team")).to_contain_text("emergency access has ended")
    page.goto(f"{live.ehr}/")
    expect(page.locator("#patients")).to_be_visible()
    assert service.sweep().ended == 1
    assert failed == []
    context.close()
