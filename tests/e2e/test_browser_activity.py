"""The account activity page in headless Chromium (Playwright) against the IdP under gunicorn:
the same person signed in on two "devices" (two browser contexts) sees both sessions, ends the
other one with its button, and only that device is signed out."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import Person, Server
from tests.helpers import forget_totp_use, totp_now
from tests.log_scan import register as register_secret

pytestmark = pytest.mark.e2e



def _device(browser: Browser, agent: str, problems: list[str]) -> tuple[BrowserContext, Page]:
    context = browser.new_context(user_agent=agent)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    tab.on("console", lambda msg: problems.append(f"{msg.text} ({msg.location.get('url')})")
           if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    return context, tab


def _device_cookie(context: BrowserContext) -> dict:
    [cookie] = [c for c in context.cookies() if c["name"] == "idp_device"]
    register_secret("device cookie", cookie["value"])
    return cookie


def _sign_in(page: Page, server: Server, person: Person) -> None:
    page.goto(server.url("/account"))
    assert page.url.startswith(server.url("/login?next=")), page.url
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username or NPI").fill(person.username)
    page.get_by_label("Password", exact=True).fill(person.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Verify it's you")).to_be_visible()
    page.get_by_label("Code from your authenticator app").fill(totp_now(person.username))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    assert page.url == server.url("/account")


def test_end_the_other_session_from_the_activity_page(idp_server: Server, person: Person,
                                                      browser: Browser):
    problems: list[str] = []
    laptop_ctx, laptop = _device(browser, "Activity-Test Laptop Chrome/126.0", problems)
    phone_ctx, phone = _device(browser, "Activity-Test Phone Safari/604.1", problems)
    try:
        _sign_in(laptop, idp_server, person)
        forget_totp_use(person.username)  # a TOTP step is single use; same step again
        _sign_in(phone, idp_server, person)
        # each browser context is a device: its own device cookie (what "new device" compares)
        devices = [_device_cookie(ctx) for ctx in (laptop_ctx, phone_ctx)]
        assert devices[0]["value"] != devices[1]["value"]
        assert all(c["httpOnly"] and c["sameSite"] == "Lax" for c in devices)

        laptop.get_by_role("link", name="Account activity").click()
        expect(laptop.get_by_role("heading", name="Account activity")).to_be_visible()
        assert laptop.url == idp_server.url("/account/activity")
        sessions = laptop.locator("li.session")
        expect(sessions).to_have_count(2)
        mine = laptop.locator('li.session[data-current="yes"]')
        expect(mine).to_contain_text("Activity-Test Laptop")
        expect(mine).to_contain_text("(this session)")
        other = laptop.locator("li.session:not([data-current])")
        expect(other).to_contain_text("Activity-Test Phone")
        expect(other).to_contain_text("IP 127.0.0.1")
        # the sign-ins are listed too: two successes, newest first
        expect(laptop.locator('tr.event[data-event="login.success"]')).to_have_count(2)

        other.get_by_role("button", name="End this session").click()
        laptop.wait_for_url(idp_server.url("/account/activity"))
        expect(laptop.get_by_text("The session was ended.")).to_be_visible()
        expect(laptop.locator("li.session")).to_have_count(1)
        expect(laptop.locator('li.session[data-current="yes"]')).to_have_count(1)

        # the phone is signed out: /account sends it to the login page
        phone.goto(idp_server.url("/account"))
        assert phone.url.startswith(idp_server.url("/login?next=")), phone.url
        expect(phone.get_by_role("heading", name="Sign in")).to_be_visible()

        # the laptop is still signed in
        laptop.goto(idp_server.url("/account"))
        expect(laptop.get_by_role("heading", name="Your account")).to_be_visible()
        assert laptop.url == idp_server.url("/account")
    finally:
        phone_ctx.close()
        laptop_ctx.close()
    assert not [p for p in problems if "/favicon.ico)" not in p], problems


def test_this_wasnt_me_signs_out_every_device_and_forces_a_new_password(
        idp_server: Server, person: Person, browser: Browser):
    problems: list[str] = []
    laptop_ctx, laptop = _device(browser, "NotMe-Test Laptop Chrome/126.0", problems)
    phone_ctx, phone = _device(browser, "NotMe-Test Phone Safari/604.1", problems)
    try:
        _sign_in(laptop, idp_server, person)
        forget_totp_use(person.username)
        _sign_in(phone, idp_server, person)

        laptop.goto(idp_server.url("/account/activity"))
        laptop.get_by_role("button", name="This wasn't me").click()
        expect(laptop.get_by_role("heading", name="Your account is secured")).to_be_visible()
        expect(laptop.get_by_role("status")).to_contain_text("(2)")

        for device in (laptop, phone):
            device.goto(idp_server.url("/account"))
            assert device.url.startswith(idp_server.url("/login?next=")), device.url

        forget_totp_use(person.username)
        phone.get_by_label("Username or NPI").fill(person.username)
        phone.get_by_label("Password", exact=True).fill(person.password)
        phone.get_by_role("button", name="Sign in").click()
        phone.get_by_label("Code from your authenticator app").fill(totp_now(person.username))
        phone.get_by_role("button", name="Verify").click()
        expect(phone.get_by_role("heading", name="Set a new password")).to_be_visible()
        expect(phone.get_by_text("reported as used by someone else")).to_be_visible()
    finally:
        phone_ctx.close()
        laptop_ctx.close()
    assert not [p for p in problems if "/favicon.ico)" not in p], problems
