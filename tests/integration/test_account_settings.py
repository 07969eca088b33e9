"""Account settings: change password, own sessions, sign out everywhere, change email."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from idp.accounts.models import EmailChange
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.oidc.models import RefreshToken
from idp.sessions.models import SsoSession
from tests.conftest import TEST_ISSUER
from tests.helpers import (
    PASSWORD,
    basic,
    csrf_from,
    exchange,
    get_code,
    login,
    make_client,
    make_user,
    signed_in_browser,
)

NEW = "Granite-Orchid-Velvet-93?"
VERIFY = re.compile(re.escape(TEST_ISSUER) + r"(/account/email/verify/[A-Za-z0-9_-]+)")


def post_form(http, page_url: str, action: str | None = None, **data):
    page = http.get(page_url)
    assert page.status_code == 200, page.headers.get("Location")
    return http.post(action or page_url, data={**data, "csrf_token": csrf_from(page.text)})


def change_password(http, current: str, new: str = NEW, confirm: str | None = None):
    return post_form(http, "/account/password", current_password=current, new_password=new,
                     confirm_password=confirm or new)


def alert(html: str) -> str:
    """The error box of a page (the rules list beside it also names the rules)."""
    return html.split('role="alert"', 1)[1].split("</div>", 1)[0]


def sids(user) -> set[str]:
    return set(db.session.execute(select(SsoSession.id).where(
        SsoSession.user_id == user.id, SsoSession.ended_at.is_(None))).scalars())


def events(name: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name))
                .scalars())


# -- sign-in required ------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/account/settings", "/account/password", "/account/sessions",
                                  "/account/email", "/account/email/verify/abc"])
def test_pages_need_a_signed_in_session(ctx, client, path):
    response = client.get(path)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/login?next=") and "account" in location


@pytest.mark.parametrize("path", ["/account/password", "/account/sessions/abc/end",
                                  "/account/sessions/end-all", "/account/email"])
def test_posts_need_a_session_and_csrf(ctx, app, path):
    make_user()
    anonymous = app.test_client()
    token = csrf_from(anonymous.get("/login").text)
    away = anonymous.post(path, data={"csrf_token": token})
    assert away.status_code == 302 and "/login" in away.headers["Location"]
    http = signed_in_browser(app)
    refused = http.post(path, data={"current_password": PASSWORD, "new_password": NEW,
                                    "confirm_password": NEW, "new_email": "a@b.example"})
    assert refused.status_code == 400 and "form has expired" in refused.text


def test_overview_and_account_page_link(ctx, app):
    make_user()
    http = signed_in_browser(app)
    assert 'href="/account/settings"' in http.get("/account").text
    page = http.get("/account/settings")
    assert page.status_code == 200
    for link in ("/account/password", "/account/email", "/account/sessions"):
        assert f'href="{link}"' in page.text
    assert "drsmith@hospital.example" in page.text


# -- change password -------------------------------------------------------------------------
def test_change_password_needs_the_current_one_and_counts_failures(ctx, app, mailbox):
    user = make_user()
    http = signed_in_browser(app)
    page = http.get("/account/password")
    for name, auto in (("current_password", "current-password"),
                       ("new_password", "new-password"), ("confirm_password", "new-password")):
        assert re.search(rf'name="{name}"[^>]*autocomplete="{auto}"', page.text), name
    wrong = change_password(http, "wrong-password-x")
    assert wrong.status_code == 400 and "current password is not right" in wrong.text
    db.session.refresh(user)
    assert user.failed_logins == 1
    # a wrong current password reveals nothing about the new one (e.g. the history rule)
    probe = change_password(http, "wrong-password-x", PASSWORD)
    assert "last 12" not in alert(probe.text) and "not right" in alert(probe.text)
    for _ in range(3):
        change_password(http, "wrong-password-x")
    db.session.refresh(user)
    assert user.locked_until is not None  # five failures: locked, as at sign-in
    assert any("locked" in m["Subject"] for m in mailbox.to(user.email))
    locked = change_password(http, PASSWORD)
    assert locked.status_code == 400 and "locked" in locked.text
    assert login(app.test_client()).status_code == 401


def test_change_password_rules_all_listed(ctx, app):
    make_user()
    http = signed_in_browser(app)
    weak = change_password(http, PASSWORD, "abc", "abd")
    assert weak.status_code == 400
    assert all(n in weak.text for n in ("do not match", "at least 12", "upper-case", "digit"))
    reused = change_password(http, PASSWORD, PASSWORD)
    assert reused.status_code == 400 and "last 12" in alert(reused.text)


def test_change_password_keeps_this_session_and_ends_the_others(ctx, app, mailbox):
    user = make_user()
    rp = make_client()
    here = signed_in_browser(app)
    there = signed_in_browser(app)
    code, verifier, _ = get_code(there, rp)
    there_tokens = exchange(there, rp, code, verifier).get_json()
    code, verifier, _ = get_code(here, rp)
    here_tokens = exchange(here, rp, code, verifier).get_json()

    done = change_password(here, PASSWORD)
    assert done.status_code == 302 and done.headers["Location"] == "/account/settings"
    assert "password was changed" in here.get("/account/settings").text
    assert here.get("/account").status_code == 200
    assert there.get("/account").status_code == 302
    assert login(app.test_client(), password=NEW).status_code == 302
    assert login(app.test_client(), password=PASSWORD).status_code == 401
    gone = here.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": there_tokens["refresh_token"]})
    assert gone.status_code == 400
    kept = here.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": here_tokens["refresh_token"]})
    assert kept.status_code == 200
    assert "Your password was changed" in [m["Subject"] for m in mailbox.to(user.email)]
    event = events("password.changed")[0]
    assert event.user_id == user.id and event.detail["reason"] == "settings"


# -- sessions --------------------------------------------------------------------------------
def test_sessions_listed_and_one_ended(ctx, app):
    user = make_user()
    rp = make_client()
    here = signed_in_browser(app)
    there = app.test_client()
    there.environ_base.update(REMOTE_ADDR="10.9.8.7", HTTP_USER_AGENT="Tablet Browser/1.0")
    login(there)
    code, verifier, _ = get_code(there, rp)
    there_refresh = exchange(there, rp, code, verifier).get_json()["refresh_token"]
    code, verifier, _ = get_code(here, rp)
    here_refresh = exchange(here, rp, code, verifier).get_json()["refresh_token"]
    page = here.get("/account/sessions")
    assert page.status_code == 200
    assert "10.9.8.7" in page.text and "Tablet Browser/1.0" in page.text
    assert "(this device)" in page.text and "pwd" in page.text
    other_sid = db.session.execute(select(SsoSession.id).where(
        SsoSession.ip == "10.9.8.7")).scalar_one()
    assert f'data-sid="{other_sid}"' in page.text
    ended = post_form(here, "/account/sessions", f"/account/sessions/{other_sid}/end")
    assert ended.status_code == 302
    assert there.get("/account").status_code == 302
    assert here.get("/account").status_code == 200
    assert len(sids(user)) == 1
    assert events("session.ended")[0].detail["sid"] == other_sid
    # the ended device's tokens went with it; this device's still refresh
    for token, status in ((there_refresh, 400), (here_refresh, 200)):
        assert here.post("/token", headers=basic(rp), data={
            "grant_type": "refresh_token", "refresh_token": token}).status_code == status


def test_ending_this_session_signs_out(ctx, app):
    user = make_user()
    here = signed_in_browser(app)
    (sid,) = sids(user)
    ended = post_form(here, "/account/sessions", f"/account/sessions/{sid}/end")
    assert ended.status_code == 302 and ended.headers["Location"] == "/login"
    assert here.get("/account").status_code == 302


def test_a_foreign_session_cannot_be_ended(ctx, app):
    make_user()
    other = make_user("np.jones", npi=None, role="nurse_practitioner")
    mine = signed_in_browser(app)
    theirs = signed_in_browser(app, "np.jones")
    (their_sid,) = sids(other)
    refused = post_form(mine, "/account/sessions", f"/account/sessions/{their_sid}/end")
    assert refused.status_code == 404
    assert theirs.get("/account").status_code == 200
    assert sids(other) == {their_sid}
    unknown = post_form(mine, "/account/sessions", "/account/sessions/no-such-sid/end")
    assert unknown.status_code == 404


def test_sign_out_everywhere(ctx, app):
    user = make_user()
    rp = make_client()
    here, there = signed_in_browser(app), signed_in_browser(app)
    code, verifier, _ = get_code(here, rp)
    tokens = exchange(here, rp, code, verifier).get_json()
    done = post_form(here, "/account/sessions", "/account/sessions/end-all")
    assert done.status_code == 302 and done.headers["Location"] == "/login"
    for http in (here, there):
        assert http.get("/account").status_code == 302
    assert sids(user) == set()
    refresh = here.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 400
    assert all(t.revoked_at for t in db.session.execute(select(RefreshToken)).scalars())
    assert events("sessions.ended_all")[0].detail["sessions_ended"] == 2


# -- email -----------------------------------------------------------------------------------
def request_change(http, new_email: str, password: str = PASSWORD):
    return post_form(http, "/account/email", new_email=new_email, current_password=password)


def verify_link(mailbox, address: str) -> str:
    bodies = [mailbox.body(m) for m in mailbox.to(address)]
    found = [VERIFY.search(b).group(1) for b in bodies if VERIFY.search(b)]
    assert found, bodies
    return found[-1]


def test_email_change_is_verified_once(ctx, app, mailbox):
    user = make_user()
    http = signed_in_browser(app)
    asked = request_change(http, "ana.smith@clinic.example")
    assert asked.status_code == 302
    heads_up = mailbox.to("drsmith@hospital.example")
    assert heads_up and "ana.smith@clinic.example" in mailbox.body(heads_up[0])
    assert VERIFY.search(mailbox.body(heads_up[0])) is None  # the link goes to the new one
    path = verify_link(mailbox, "ana.smith@clinic.example")
    stored = db.session.execute(select(EmailChange)).scalar_one()
    assert path.rsplit("/", 1)[1] not in stored.token_hash
    db.session.refresh(user)
    assert user.email == "drsmith@hospital.example"  # nothing changes before the link

    applied = http.get(path)
    assert applied.status_code == 302
    assert "now ana.smith@clinic.example" in http.get(applied.headers["Location"]).text
    db.session.refresh(user)
    assert user.email == "ana.smith@clinic.example" and user.email_verified
    again = http.get(path)
    assert again.status_code == 400 and "cannot be used" in again.text
    assert [e.user_id for e in events("email.changed")] == [user.id]


def test_email_change_needs_the_password_and_a_valid_address(ctx, app, mailbox):
    user = make_user()
    http = signed_in_browser(app)
    wrong = request_change(http, "new@clinic.example", "wrong-password-x")
    assert wrong.status_code == 400 and "current password is not right" in wrong.text
    db.session.refresh(user)
    assert user.failed_logins == 1
    bad = request_change(http, "not-an-address")
    assert bad.status_code == 400
    same = request_change(http, "DRSMITH@hospital.example")
    assert same.status_code == 400 and "already your email" in same.text
    assert not mailbox.messages


def test_email_link_expires_is_superseded_and_belongs_to_its_account(ctx, app, mailbox, frozen):
    user = make_user()
    make_user("np.jones", npi=None, role="nurse_practitioner")
    http = signed_in_browser(app)
    request_change(http, "first@clinic.example")
    request_change(http, "second@clinic.example")
    first = verify_link(mailbox, "first@clinic.example")
    second = verify_link(mailbox, "second@clinic.example")
    assert http.get(first).status_code == 400  # the newer request replaced it
    stranger = signed_in_browser(app, "np.jones")
    assert stranger.get(second).status_code == 400  # another account's link changes nothing
    frozen.advance(24 * 3600 + 1)
    fresh = signed_in_browser(app)
    assert fresh.get(second).status_code == 400
    db.session.refresh(user)
    assert user.email == "drsmith@hospital.example"


def test_email_change_revokes_pending_reset_links(ctx, app, mailbox):
    user = make_user()
    anonymous = app.test_client()
    page = anonymous.get("/password/forgot")
    anonymous.post("/password/forgot", data={"identifier": "drsmith",
                                             "csrf_token": csrf_from(page.text)})
    reset_path = re.search(r"(/password/reset/\S+)",
                           mailbox.body(mailbox.to(user.email)[0])).group(1)
    http = signed_in_browser(app)
    request_change(http, "new@clinic.example")
    assert http.get(verify_link(mailbox, "new@clinic.example")).status_code == 302
    assert anonymous.get(reset_path).status_code == 400
