"""The SAML IdP with a real service provider that is not ours: Apache httpd with
mod_auth_mellon, in Chromium. SP-initiated sign-in through password, TOTP and the daily
acknowledgment shows our attributes on its page; logout at the SP (SAML SLO) ends our session,
and the protected page leads to our login page again. Mixed protocols through the real portal
(the development stack, `make run`): signed in at the OIDC portal, the SP's tile signs in at
mellon without a password prompt, and logout at the portal ends the SAML session too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import pyotp
import pytest
import sqlalchemy as sa
from sqlalchemy import select

from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.sessions.models import SsoSession
from tests.e2e.conftest import Person, Server
from tests.e2e.saml_sps import MellonSp, mellon_sp, register_sp
from tests.e2e.test_devstack import Stack, running_stack
from tests.helpers import PASSWORD, TOTP_SECRETS, forget_totp_use, make_user

pytestmark = pytest.mark.e2e


@pytest.fixture
def unacknowledged(ctx) -> Person:
    user = make_user("drmellon", npi="1245319599", acknowledged=False,
                     facility="General Hospital", given_name="Maria", family_name="Lopez")
    found = Person(user.username, user.npi, user.subject, PASSWORD, user.email,
                   TOTP_SECRETS[user.username])
    db.session.commit()
    return found


@pytest.fixture
def mellon(idp_server, env, ctx):
    with mellon_sp(idp_server, env) as sp:
        db.session.rollback()
        yield sp


def _sign_in(page, idp_server, person: Person) -> None:
    page.wait_for_url(f"{idp_server.base}/login?**")
    page.get_by_label("Username or NPI").fill(person.username)
    page.get_by_label("Password").fill(person.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"{idp_server.base}/mfa/challenge")
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(person.totp_secret).now())
    page.get_by_role("button", name="Verify").click()
    forget_totp_use(person.username)


def arrived(page, mellon, path: str) -> None:
    """The browser is at `path` of the SP (else the SP's log says why)."""
    try:
        page.wait_for_url(mellon.url(path), timeout=15000)
    except Exception:  # noqa: BLE001 - reported with the SP's side of the story
        pytest.fail(f"not at {path} but {page.url}:\n{page.content()[:600]}\n{mellon.log()}")


def test_mellon_signs_in_through_password_totp_and_acknowledgment_then_logs_out(
        idp_server, env, browser, unacknowledged, mellon):
    person = unacknowledged
    registered = register_sp(env, mellon.root / "sp.xml", "--name", "Mellon test SP")
    assert registered["entity_id"] == mellon.entity_id
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(mellon.url("/protected/"))
        _sign_in(page, idp_server, person)
        page.wait_for_url(f"{idp_server.base}/account/acknowledge**")
        page.locator("#acknowledge").check()
        page.get_by_role("button", name="Continue").click()
        arrived(page, mellon, "/protected/")
        assert page.locator("h1").inner_text() == "Mellon protected page", mellon.log()
        shown = {k: page.locator(f"#{k}").inner_text() for k in (
            "email", "given_name", "family_name", "preferred_username", "npi", "roles",
            "facility", "nameid")}
        assert shown["email"] == person.email and shown["given_name"] == "Maria"
        assert shown["family_name"] == "Lopez" and shown["preferred_username"] == "drmellon"
        assert shown["npi"] == "1245319599" and shown["roles"] == "physician"
        assert shown["facility"] == "General Hospital"
        assert shown["nameid"] and shown["nameid"] != person.subject  # pairwise per SP
        db.session.rollback()
        user_id = db.session.execute(select(User.id).where(
            User.username == person.username)).scalar_one()
        events = db.session.execute(select(AuditEvent.event).where(
            AuditEvent.user_id == user_id)).scalars().all()
        assert "saml.sso" in events

        # Logout at the SP: SAML SLO (HTTP-Redirect, signed both ways) ends our session.
        page.goto(mellon.url("/mellon/logout?ReturnTo=" + mellon.url("/bye.html")))
        page.wait_for_url(mellon.url("/bye.html"))
        db.session.rollback()
        live = db.session.execute(select(SsoSession).where(
            SsoSession.user_id == user_id, SsoSession.ended_at.is_(None))).scalars().all()
        assert live == []
        page.goto(mellon.url("/protected/"))
        page.wait_for_url(f"{idp_server.base}/login?**")
    finally:
        context.close()


def test_mellon_idp_initiated_then_logout_at_the_idp_then_single_sign_on_from_the_idp(
        idp_server, env, browser, person, mellon):
    """IdP-initiated (/saml/launch, the portal's tile link) signs in first; logout at the IdP
    ends the mellon session too (SOAP LogoutRequest); signed in at the IdP itself, the mellon
    SP then signs in without a password prompt (one SSO session for both protocols)."""
    register_sp(env, mellon.root / "sp.xml", "--name", "Mellon test SP")
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(idp_server.url("/saml/launch?sp=" + quote(mellon.entity_id, safe="")
                                 + "&RelayState=" + quote(mellon.url("/protected/"), safe="")))
        _sign_in(page, idp_server, person)
        arrived(page, mellon, "/protected/")
        assert page.locator("#preferred_username").inner_text() == person.username

        # Logout at the IdP: the SP hears of it by SOAP and forgets its session.
        page.goto(idp_server.url("/logout"))
        page.get_by_role("button", name="Logout").click()
        page.wait_for_load_state()
        page.goto(mellon.url("/protected/"))
        page.wait_for_url(f"{idp_server.base}/login?**")
        db.session.rollback()
        events = db.session.execute(select(AuditEvent.event, AuditEvent.detail).where(
            AuditEvent.event == "saml.logout_sent")).all()
        assert events and events[0].detail.get("outcome") == "delivered", events

        # Signed in at the IdP (its own sign-in page), the SP needs no password.
        page.goto(idp_server.url("/login?next=/account"))
        _sign_in(page, idp_server, person)
        page.wait_for_url(f"{idp_server.base}/account**")
        page.goto(mellon.url("/protected/"))
        arrived(page, mellon, "/protected/")
        assert page.locator("#email").inner_text() == person.email
    finally:
        context.close()


def test_logout_at_the_idp_reaches_mellon_through_the_browser_when_it_has_no_soap(
        idp_server, env, browser, person):
    """Front-channel SLO: mellon registered with only its HTTP-Redirect SingleLogoutService.
    Logout at the IdP takes the browser to mellon with a signed LogoutRequest, mellon answers
    to /saml/slo, and the browser ends on our signed-out page; mellon's session is gone."""
    with mellon_sp(idp_server, env, soap=False) as sp:
        assert "SOAP" not in (sp.root / "sp.xml").read_text()
        register_sp(env, sp.root / "sp.xml", "--name", "Mellon front-channel SP")
        context = browser.new_context()
        page = context.new_page()
        visited: list[str] = []  # every request of the page, redirects included
        page.on("request", lambda req: visited.append(req.url))
        try:
            page.goto(sp.url("/protected/"))
            _sign_in(page, idp_server, person)
            arrived(page, sp, "/protected/")
            page.goto(idp_server.url("/logout"))
            page.get_by_role("button", name="Logout").click()
            try:
                page.wait_for_url(f"{idp_server.base}/saml/slo/continue?**", timeout=15000)
            except Exception:  # noqa: BLE001 - reported with both sides of the story
                pytest.fail(f"at {page.url} after {visited}:\n{page.content()[:800]}\n"
                            f"{sp.log()}\n{idp_server.stderr()[-3000:]}")
            assert page.get_by_role("heading", name="You are signed out").is_visible(), \
                (visited, sp.log())
            to_mellon = [u for u in visited if u.startswith(sp.url("/mellon/logout?SAMLRequest="))]
            back = [u for u in visited if u.startswith(idp_server.url("/saml/slo?SAMLResponse="))]
            assert len(to_mellon) == 1 and len(back) == 1, visited
            db.session.rollback()
            sent = db.session.execute(select(AuditEvent.detail).where(
                AuditEvent.event == "saml.logout_sent")).scalars().all()
            assert [d.get("outcome") for d in sent if d.get("sp") == sp.entity_id] == \
                ["front_channel"]
            page.goto(sp.url("/protected/"))
            page.wait_for_url(f"{idp_server.base}/login?**")
        finally:
            context.close()


# -- mixed protocols through the real portal (the development stack) ---------------------------
@pytest.fixture
def stack_and_mellon(tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[tuple[Stack, MellonSp, dict[str, str]]]:
    """`make run`'s stack with its IdP on 127.0.0.1 (the same site as mellon's loopback port:
    mellon's cookies carry no SameSite, see saml_sps) and mellon registered with it through
    `idp saml sps create`, against the stack's own database, keys and instance directory."""
    tmp = tmp_path_factory.mktemp("devstack-saml")
    with running_stack(tmp, idp_host="127.0.0.1") as stack:
        idp = Server(stack.urls["IdP"], tmp)
        stack_env = {"DATABASE_URL": stack.database, "IDP_KEYS_DIR": str(tmp / "keys"),
                     "IDP_INSTANCE_DIR": str(stack.instance), "IDP_ISSUER": idp.base}
        with mellon_sp(idp, stack_env) as sp:
            yield stack, sp, stack_env


def _stack_rows(stack: Stack, query: sa.Select) -> list[sa.Row]:
    engine = sa.create_engine(stack.database)
    try:
        with engine.connect() as conn:
            return list(conn.execute(query))
    finally:
        engine.dispose()


def _await_logout_sent(stack: Stack, sp: MellonSp) -> list[sa.Row]:
    """The IdP sends the SOAP LogoutRequest after its logout response has gone out: wait
    until it is recorded (a wait, not a timed assertion: the bound only ends a broken run)."""
    events = AuditEvent.__table__
    query = sa.select(events.c.event, events.c.detail).where(
        events.c.event == "saml.logout_sent")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = _stack_rows(stack, query)
        if rows:
            return rows
        time.sleep(0.2)
    pytest.fail(f"no saml.logout_sent recorded:\n{stack.output}\n{sp.log()}")


def test_portal_tile_signs_in_at_mellon_without_a_password_and_portal_logout_ends_it(
        stack_and_mellon, browser):
    stack, mellon, stack_env = stack_and_mellon
    idp, portal = stack.urls["IdP"], stack.urls["Portal"]
    registered = register_sp(stack_env, mellon.root / "sp.xml", "--name", "Mellon test SP")
    assert registered["entity_id"] == mellon.entity_id
    username = "dr.rivera"
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    visited: list[str] = []
    page.on("framenavigated", lambda frame: visited.append(frame.url)
            if frame == page.main_frame else None)
    try:
        # Signed in at the OIDC portal: password, authenticator app, (daily acknowledgment).
        page.goto(f"{portal}/")
        page.locator("#sign-in").click()
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
        page.wait_for_url(f"{portal}/")
        assert "Welcome, Alex Rivera" in page.content()

        # The portal learnt the user's SAML applications from the IdP (/saml/apps): one tile,
        # the IdP-initiated link. Clicking it signs in at mellon with no password prompt.
        tile = page.locator("#apps").get_by_role("link", name="Mellon test SP")
        assert tile.get_attribute("href") == (
            f"{idp}/saml/launch?sp=" + quote(mellon.entity_id, safe=""))
        before = len(visited)
        tile.click()
        arrived(page, mellon, "/protected/")
        assert page.locator("#preferred_username").inner_text() == username
        assert not [u for u in visited[before:] if u.startswith(f"{idp}/login")], visited

        # Logout at the portal: RP-initiated logout ends the IdP session, whose SAML
        # participant (mellon) gets a SOAP LogoutRequest; the protected page then leads to
        # our login page again.
        page.goto(f"{portal}/")
        page.get_by_role("button", name="Logout").click()
        page.wait_for_url(f"{portal}/?state=**")
        sent = _await_logout_sent(stack, mellon)
        assert sent[0].detail.get("outcome") == "delivered", (sent, mellon.log())
        page.goto(mellon.url("/protected/"))
        page.wait_for_url(f"{idp}/login?**")
    finally:
        context.close()
