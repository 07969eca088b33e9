"""A clinician signs in through the login page in Chromium with their hospital directory
(Active Directory stand-in: a real slapd) password and their authenticator app; then the
directory goes down and the same page says so in words (503, accessible), never a 500."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import select

from idp.accounts.models import User
from idp.extensions import db
from idp.federation.ldap import service
from tests.e2e.axe import assert_accessible
from tests.e2e.conftest import Server, free_port, gunicorn_process
from tests.helpers import enroll_totp
from tests.ldap_server import PASSWORD, ldap_policy_dir, user_dn

pytestmark = pytest.mark.e2e


@pytest.fixture
def ldap_idp(ldap_env: dict[str, str], tmp_path: Path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_dir = tmp_path / "gunicorn"
    log_dir.mkdir()
    child_env = {**os.environ, **ldap_env, "IDP_ISSUER": base, "IDP_LOG_FORMAT": "json",
                 "IDP_POLICY_DIR": str(ldap_policy_dir(tmp_path / "policies"))}
    child_env.pop("IDP_PROXY_HOPS", None)
    with gunicorn_process(["--workers", "1", "--worker-class", "gthread", "--threads", "4",
                           "--graceful-timeout", "5"], port, child_env,
                          Server(base, log_dir)) as server:
        yield server
    assert "unhandled" not in server.full_log(), server.stderr()


def test_directory_password_sign_in_in_chromium(lctx, slapd, ldap_idp: Server,
                                                 browser: Browser):
    service.sync()
    user = db.session.execute(select(User).where(User.username == "ajones")).scalar_one()
    secret = enroll_totp(user)
    db.session.commit()

    context = browser.new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(ldap_idp.url("/login"))
    page.get_by_label("Username or NPI").fill("ajones")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Verify").click()
    expect(page).not_to_have_url(re.compile(r".*/(login|mfa/).*"))
    assert slapd.binds(user_dn("ajones")) == 1
    context.close()

    # The directory goes away; the next person's sign-in gets a page that says so.
    slapd.kill()
    context = browser.new_context()
    page = context.new_page()
    page.goto(ldap_idp.url("/login"))
    page.get_by_label("Username or NPI").fill("ajones")
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_response(lambda r: r.url.endswith("/login") and
                              r.request.method == "POST") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 503
    expect(page.get_by_role("alert")).to_contain_text("cannot be reached")
    assert_accessible(page, "login page, directory unavailable")
    context.close()
