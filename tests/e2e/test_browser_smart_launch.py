"""SMART App Launch in headless Chromium against the development stack (`make run`: the IdP,
the portal, the EHR and the demo SMART app as gunicorn processes). EHR launch: a physician
signed in at the EHR presses "Launch app" beside a patient; the app opens on that patient
after the IdP's consent page (the app is a third party), reading it from the EHR's FHIR API.
Standalone launch: the app, opened on its own, sends the physician through the IdP's patient
picker (which reads the EHR's patient directory as the user) and shows the chosen patient."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from clients.ehr.data import PRACTITIONERS
from idp.demo import ACCOUNTS
from tests.e2e.axe import assert_accessible
from tests.e2e.test_browser_ehr_step_up import _sign_in
from tests.e2e.test_devstack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("devstack-smart")) as running:
        yield running


def test_ehr_launch_and_standalone_launch_of_the_smart_app(stack: Stack, browser: Browser):
    idp, ehr, app = stack.urls["IdP"], stack.urls["EHR"], stack.urls["SMART"]
    npi = next(a.npi for a in ACCOUNTS if a.username == "dr.rivera")
    # fhirUser: the EHR's own logical id for her Practitioner, found by NPI at start
    practitioner = next(p["id"] for p in PRACTITIONERS if p["npi"] == npi)
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"{msg.text} ({msg.location.get('url')})")
            if msg.type == "error" else None)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
            if r.status >= 400 else None)

    page.goto(f"{ehr}/")
    page.get_by_role("button", name="Sign in").click()
    _sign_in(page, stack, "dr.rivera")
    page.wait_for_url(f"{ehr}/")

    # EHR launch: the button beside Marcus Bell.
    page.get_by_role("button", name="Launch app: Patient summary (SMART app) for Marcus Bell"
                     ).click()
    page.wait_for_url(f"{idp}/authorize?**")
    assert "launch=" in page.url and "aud=" in page.url
    expect(page.get_by_role("heading", name="Patient summary (SMART app) wants to")
           ).to_be_visible()
    expect(page.locator('[data-scope="patient/Patient.rs"]')).to_have_text(
        "Read, search the selected patient's Patient records in the EHR")
    assert_accessible(page, "consent")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{app}/callback?**")
    expect(page.locator("#patient-name")).to_have_text("Marcus Bell")
    expect(page.locator("#patient-id")).to_have_text("DEMO-0003")
    expect(page.locator("#fhir-user")).to_have_text(f"{ehr}/fhir/Practitioner/{practitioner}")

    # Standalone launch: the app on its own; the IdP asks which patient.
    page.goto(f"{app}/")
    page.get_by_role("button", name="Choose a patient").click()
    page.wait_for_url(f"{idp}/authorize?**")  # launch/patient: not consented yet
    expect(page.locator('[data-scope="launch/patient"]')).to_be_visible()
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{idp}/smart/patient?**")
    expect(page.get_by_role("heading", name="Choose a patient")).to_be_visible()
    assert_accessible(page, "SMART app: choose a patient")
    page.get_by_label("Priya Natarajan").check()
    page.get_by_role("button", name="Open this patient").click()
    page.wait_for_url(f"{app}/callback?**")
    expect(page.locator("#patient-name")).to_have_text("Priya Natarajan")
    expect(page.locator("#patient-id")).to_have_text("DEMO-0002")
    context.close()

    assert not failed, failed
    assert not [p for p in problems if "/favicon.ico)" not in p], problems
