"""OpenID Connect Back-Channel Logout 1.0 at the IdP: every way an SSO session ends sends a
logout token to each relying party that received tokens in it (and to no other), the token is
what §2.4 says, deliveries are recorded, retried with back-off while an RP is down and
delivered once it is back; `idp sessions deliver` and `idp sessions expire` are the cron jobs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select, update

from idp import clock
from idp.accounts import reset
from idp.accounts import settings as account_settings
from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.cli import main
from idp.context import policy, runtime
from idp.extensions import db
from idp.oidc import backchannel
from idp.oidc.models import BackchannelLogout
from idp.sessions.models import SsoSession
from tests.helpers import (
    PASSWORD,
    csrf_from,
    exchange,
    get_code,
    login,
    make_client,
    make_user,
)
from tests.receiver import Receiver

EVENT = "http://schemas.openid.net/event/backchannel-logout"
IDP = str(Path(sys.executable).parent / "idp")


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def tokens_for(http, rp) -> dict:
    code, verifier, _ = get_code(http, rp, scope="openid profile")
    response = exchange(http, rp, code, verifier)
    assert response.status_code == 200, response.text
    return response.get_json()


def sid_of(http, rp) -> tuple[str, str]:
    """Sign-in artefacts of this browser's session for this client: (id_token, sid)."""
    id_token = tokens_for(http, rp)["id_token"]
    claims = jwt.decode(id_token, KeySet.import_key_set(http.get("/jwks.json").get_json()))
    return id_token, claims.claims["sid"]


def rows(sid: str | None = None) -> list[BackchannelLogout]:
    db.session.rollback()  # see what other sessions (the delivery after the response) wrote
    return backchannel.deliveries(sid)


def decode(client, token: str) -> jwt.Token:
    keys = KeySet.import_key_set(client.get("/jwks.json").get_json())
    return jwt.decode(token, keys, algorithms=["RS256"])


def logout(http, id_token: str):
    return http.get("/logout", query_string={"id_token_hint": id_token})


def test_discovery_advertises_backchannel_logout(ctx, client):
    meta = client.get("/.well-known/openid-configuration").get_json()
    assert meta["backchannel_logout_supported"] is True
    assert meta["backchannel_logout_session_supported"] is True


def test_logout_sends_one_token_to_each_client_of_the_session_and_none_to_others(
        ctx, client, app, receiver):
    user = make_user()
    subject = user.subject
    # Three RPs with a back-channel URI; the user signs in to two of them in this session, the
    # third only in another browser's session. A fourth RP got tokens but has no URI.
    used = make_client(name="used", backchannel_logout_uri=receiver.url("/used"))
    also = make_client(name="also", backchannel_logout_uri=receiver.url("/also"))
    elsewhere = make_client(name="elsewhere", backchannel_logout_uri=receiver.url("/elsewhere"))
    silent = make_client(name="silent")
    login(client)
    id_token, sid = sid_of(client, used)
    tokens_for(client, used)  # a second grant in the same session: still one token
    tokens_for(client, also)
    tokens_for(client, silent)
    other_browser = app.test_client()
    login(other_browser)
    _, other_sid = sid_of(other_browser, elsewhere)
    assert other_sid != sid
    db.session.commit()

    response = logout(client, id_token)
    assert response.status_code == 200  # the IdP's "you are signed out" page

    # Delivered once the response went out, one POST per client of that session.
    assert sorted(p.path for p in receiver.posts) == ["/also", "/used"]
    for post in receiver.posts:
        assert post.content_type == "application/x-www-form-urlencoded"
        assert set(post.form) == {"logout_token"}
    recorded = rows()
    assert {(r.client_id, r.sid) for r in recorded} == {(used.client_id, sid),
                                                          (also.client_id, sid)}
    assert all(r.delivered_at and r.attempts == 1 and r.last_error is None for r in recorded)
    assert all(backchannel.status(r) == "delivered" for r in recorded)

    # The logout token (§2.4).
    by_path = {p.path: p.logout_token for p in receiver.posts}
    decoded = decode(client, by_path["/used"])
    assert decoded.header["typ"] == "logout+jwt" and decoded.header["alg"] == "RS256"
    assert decoded.header["kid"]
    claims = decoded.claims
    assert set(claims) == {"iss", "aud", "iat", "exp", "jti", "sid", "sub", "events"}
    assert claims["iss"] == "http://idp.test" and claims["aud"] == used.client_id
    assert claims["sid"] == sid and claims["sub"] == subject
    assert claims["events"] == {EVENT: {}}
    assert "nonce" not in claims
    assert claims["exp"] - claims["iat"] == 120
    assert abs(claims["iat"] - clock.timestamp()) < 60
    assert decode(client, by_path["/also"]).claims["aud"] == also.client_id
    assert decode(client, by_path["/also"]).claims["jti"] != claims["jti"]

    # The other browser's session is untouched; its client heard nothing.
    assert rows(other_sid) == []
    assert db.session.get(SsoSession, other_sid).ended_at is None
    assert db.session.scalar(select(AuditEvent.seq).where(
        AuditEvent.event == "logout_token.delivered", AuditEvent.client_id == used.client_id))


def test_the_logout_token_has_no_nonce_even_when_the_sign_in_had_one(ctx, client, receiver):
    make_user()
    rp = make_client(backchannel_logout_uri=receiver.url())
    login(client)
    code, verifier, params = get_code(client, rp, scope="openid", nonce="n-remember-me")
    id_token = exchange(client, rp, code, verifier).get_json()["id_token"]
    assert decode(client, id_token).claims["nonce"] == "n-remember-me"
    logout(client, id_token)
    [post] = receiver.posts
    assert "nonce" not in decode(client, post.logout_token).claims


# -- every way a session ends ----------------------------------------------------------------
def _signed_in_rp(client, receiver):
    make_user()
    rp = make_client(backchannel_logout_uri=receiver.url())
    login(client)
    id_token, sid = sid_of(client, rp)
    db.session.commit()
    return rp, id_token, sid


def _ended(sid: str) -> SsoSession:
    db.session.rollback()
    return db.session.get(SsoSession, sid)


def _user() -> User:
    return db.session.execute(select(User).where(User.username == "drsmith")).scalar_one()


def _http_paths(client, frozen):
    """Session-ending paths a browser drives: name -> action(client, id_token, sid)."""
    def idle(http, id_token, sid):
        frozen.advance(policy().session.idle_timeout + 1)
        http.get("/account")

    def absolute(http, id_token, sid):
        for _ in range(policy().session.absolute_timeout // 1500 + 1):  # keep it not idle
            frozen.advance(1500)
            db.session.execute(update(SsoSession).where(SsoSession.id == sid)
                               .values(last_seen_at=clock.now()))
            db.session.commit()
        http.get("/account")

    def end_all(http, id_token, sid):
        page = http.get("/account/sessions")
        http.post("/account/sessions/end-all", data={"csrf_token": csrf_from(page.text)})

    def end_this(http, id_token, sid):
        page = http.get("/account/sessions")
        http.post(f"/account/sessions/{sid}/end", data={"csrf_token": csrf_from(page.text)})

    def replaced(http, id_token, sid):
        login(http)  # a new sign-in in the same browser ends the old session

    return {"logout": lambda http, id_token, sid: logout(http, id_token), "idle": idle,
            "absolute": absolute, "sign_out_everywhere": end_all, "end_this_session": end_this,
            "replaced": replaced}


@pytest.mark.parametrize("path", ["logout", "idle", "absolute", "sign_out_everywhere",
                                  "end_this_session", "replaced"])
def test_every_browser_path_that_ends_a_session_sends_logout_tokens(ctx, client, frozen,
                                                                    receiver, path):
    rp, id_token, sid = _signed_in_rp(client, receiver)
    _http_paths(client, frozen)[path](client, id_token, sid)
    ended = _ended(sid)
    assert ended.ended_at is not None, path
    [row] = rows(sid)
    assert row.client_id == rp.client_id and row.delivered_at is not None, path
    [post] = receiver.posts
    assert decode(client, post.logout_token).claims["sid"] == sid


@pytest.mark.parametrize("which", ["one", "all"])
def test_an_admin_ending_sessions_sends_logout_tokens(ctx, client, receiver, which):
    rp, id_token, sid = _signed_in_rp(client, receiver)
    user_id = _user().id
    admin = client.application.test_client()
    make_user("root.admin", npi=None, role="admin", given_name="Ada", family_name="Root")
    assert login(admin, "root.admin").status_code == 302
    token = csrf_from(admin.get(f"/admin/users/{user_id}").text)
    path = f"/admin/users/{user_id}/sessions/{sid}/end" if which == "one" else \
        f"/admin/users/{user_id}/sessions/end-all"
    assert admin.post(path, data={"csrf_token": token}).status_code == 302
    assert _ended(sid).ended_at is not None
    [row] = rows(sid)
    assert row.client_id == rp.client_id and row.delivered_at is not None
    [post] = receiver.posts
    assert decode(client, post.logout_token).claims["sid"] == sid


def _service_paths():
    """Session-ending paths of services, the helpdesk CLI and the admin side."""
    def password_reset_link(user, sid):
        link = reset.issue_link(user)
        item, _ = reset.valid_link(link.url.rsplit("/", 1)[1])
        assert reset.complete(item, "Another-Sturdy-Password-77!")

    def password_changed_elsewhere(user, sid):
        # The settings page's change ends every other session: `sid` is the other one.
        keep = SsoSession(id="kept-session", token_hash="0" * 64, user_id=user.id,
                          created_at=clock.now(), last_seen_at=clock.now(),
                          auth_time=clock.now(), acr="urn:healthidp:acr:aal2", amr=["pwd"])
        db.session.add(keep)
        db.session.flush()
        assert account_settings.change_password(user, keep, PASSWORD,
                                                "Another-Sturdy-Password-77!").ok

    return {
        "password_reset_link": password_reset_link,
        "temporary_password": lambda user, sid: reset.set_temporary(user, actor="test"),
        "disabled": lambda user, sid: account_settings.set_disabled(user, True, actor="test"),
        "helpdesk_sign_out": lambda user, sid: account_settings.sign_out_everywhere(
            user, "helpdesk", actor="test"),
        "end_one_session": lambda user, sid: account_settings.end_own_session(user, sid, None),
        "password_changed_elsewhere": password_changed_elsewhere,
    }


@pytest.mark.parametrize("path", ["password_reset_link", "temporary_password", "disabled",
                                  "helpdesk_sign_out", "end_one_session",
                                  "password_changed_elsewhere"])
def test_every_service_path_that_ends_a_session_queues_and_delivers(ctx, client, receiver,
                                                                     path):
    rp, id_token, sid = _signed_in_rp(client, receiver)
    _service_paths()[path](_user(), sid)
    db.session.commit()
    [row] = rows(sid)  # queued in the same transaction as the change
    assert row.client_id == rp.client_id and row.delivered_at is None and row.attempts == 0
    assert _ended(sid).ended_at is not None
    report = backchannel.deliver_pending()  # what the CLI does once the command is committed
    assert report is not None and report.delivered == 1
    [post] = receiver.posts
    assert decode(client, post.logout_token).claims["sid"] == sid


@pytest.mark.parametrize("command", [("users", "disable", "drsmith"),
                                     ("users", "sessions", "end", "drsmith"),
                                     ("users", "reset-password", "--temporary", "drsmith")])
def test_helpdesk_cli_commands_send_logout_tokens(ctx, client, env, receiver, command):
    rp, id_token, sid = _signed_in_rp(client, receiver)
    db.session.commit()
    result = subprocess.run([IDP, *command, "--json"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [row] = rows(sid)
    assert row.client_id == rp.client_id and row.delivered_at is not None
    [post] = receiver.posts
    assert decode(client, post.logout_token).claims["sid"] == sid


def test_a_session_ended_twice_is_announced_once(ctx, client, receiver):
    rp, id_token, sid = _signed_in_rp(client, receiver)
    user = _user()
    account_settings.sign_out_everywhere(user, "helpdesk", actor="test")
    account_settings.sign_out_everywhere(user, "helpdesk", actor="test")
    db.session.commit()
    assert len(rows(sid)) == 1
    backchannel.deliver_pending()
    assert len(receiver.posts) == 1


def test_a_client_without_a_code_in_the_session_is_not_told(ctx, client, receiver):
    make_user()
    make_client(name="registered but unused", backchannel_logout_uri=receiver.url())
    login(client)
    page = client.get("/logout")
    client.post("/logout", data={"confirm": "yes", "csrf_token": csrf_from(page.text)})
    assert rows() == [] and receiver.posts == []


# -- retries -------------------------------------------------------------------------------
def _cli(env: dict[str, str], *args: str) -> dict:
    """`idp ...` in this process (so the moved clock applies), as cron would run it."""
    result = CliRunner().invoke(main, [*args, "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_an_rp_that_is_down_is_retried_with_back_off_and_gets_the_token_when_it_is_back(
        ctx, client, env, frozen):
    down = Receiver()  # its port is closed: nothing listens there yet
    make_user()
    rp = make_client(backchannel_logout_uri=down.url())
    login(client)
    id_token, sid = sid_of(client, rp)
    db.session.commit()

    logout(client, id_token)  # first attempt right after the response: refused
    [row] = rows(sid)
    assert row.attempts == 1 and row.delivered_at is None
    assert row.last_error == "connection refused or failed"
    assert abs((row.next_attempt_at - clock.now()).total_seconds() - 10) < 2
    assert backchannel.status(row) == "waiting"

    # Not due yet: cron does nothing.
    assert _cli(env, "sessions", "deliver")["attempted"] == 0
    frozen.advance(11)
    report = _cli(env, "sessions", "deliver")
    assert (report["attempted"], report["failed"], report["pending"]) == (1, 1, 1)
    [row] = rows(sid)
    assert row.attempts == 2 and row.last_error == "connection refused or failed"
    waited = (row.next_attempt_at - clock.now()).total_seconds()
    assert 18 <= waited <= 21  # doubled
    frozen.advance(15)
    assert _cli(env, "sessions", "deliver")["attempted"] == 0  # still backing off

    down.start()  # the RP is back
    try:
        frozen.advance(10)
        report = _cli(env, "sessions", "deliver")
        assert (report["attempted"], report["delivered"], report["pending"]) == (1, 1, 0)
        [post] = down.posts
        claims = decode(client, post.logout_token).claims
        assert claims["sid"] == sid and claims["aud"] == rp.client_id
        assert abs(claims["iat"] - clock.timestamp()) < 5  # signed afresh for this attempt
        [row] = rows(sid)
        assert row.attempts == 3 and row.delivered_at is not None and row.last_error is None
        # Delivered once: later runs leave it alone.
        frozen.advance(3600)
        assert _cli(env, "sessions", "deliver")["attempted"] == 0
        assert len(down.posts) == 1
    finally:
        down.stop()


def test_an_rp_answering_an_error_is_retried_and_the_error_recorded(ctx, client, frozen):
    failing = Receiver(status=500).start()
    try:
        rp, id_token, sid = _signed_in_rp(client, failing)
        logout(client, id_token)
        [row] = rows(sid)
        assert row.delivered_at is None and row.last_error == "HTTP 500"
        failing.status = 204  # 204 No Content is success too
        frozen.advance(11)
        assert backchannel.deliver_due().delivered == 1
        assert len(failing.posts) == 2
    finally:
        failing.stop()


def test_back_off_doubles_to_a_cap_and_the_delivery_is_abandoned_after_the_last_attempt(
        ctx, client, frozen, monkeypatch):
    rules = dataclasses.replace(policy().backchannel, max_attempts=4, retry_max_delay=30)
    monkeypatch.setattr(runtime(), "policy", dataclasses.replace(policy(), backchannel=rules))
    assert [backchannel.backoff(n).total_seconds() for n in (1, 2, 3, 4, 5)] == \
        [10, 20, 30, 30, 30]
    down = Receiver()
    rp, id_token, sid = _signed_in_rp(client, down)
    logout(client, id_token)
    for _ in range(3):
        frozen.advance(31)
        backchannel.deliver_due()
    [row] = rows(sid)
    assert row.attempts == 4 and row.next_attempt_at is None and row.delivered_at is None
    assert backchannel.status(row) == "abandoned"
    assert db.session.scalar(select(AuditEvent.detail).where(
        AuditEvent.event == "logout_token.abandoned"))["attempts"] == 4
    frozen.advance(3600)
    assert backchannel.deliver_due().attempted == 0


def test_an_attempt_is_claimed_once(ctx, client, receiver, monkeypatch):
    """Two deliverers (two nodes, or a node and cron) never post the same attempt twice: the
    claim is a compare-and-set on the attempt count."""
    rp, id_token, sid = _signed_in_rp(client, receiver)
    account_settings.sign_out_everywhere(_user(), "helpdesk", actor="test")
    db.session.commit()
    [row] = rows(sid)
    real_backoff = backchannel.backoff

    def competing_claim(attempts: int) -> timedelta:
        # Between our read of the row and our claim, another deliverer claims the attempt.
        with db.engine.begin() as conn:
            conn.execute(update(BackchannelLogout).where(BackchannelLogout.id == row.id)
                         .values(attempts=BackchannelLogout.attempts + 1))
        return real_backoff(attempts)

    monkeypatch.setattr(backchannel, "backoff", competing_claim)
    report = backchannel.DeliveryReport()
    backchannel._attempt(row.id, report)
    assert report.attempted == 0 and receiver.posts == []  # we lost the claim: no POST
    [row] = rows(sid)
    assert row.attempts == 1 and row.delivered_at is None


# -- cron: expire ----------------------------------------------------------------------------
def test_sessions_expire_ends_idle_and_old_sessions_and_tells_their_rps(ctx, client, env,
                                                                        receiver):
    rp, id_token, sid = _signed_in_rp(client, receiver)
    live = make_client(name="live", backchannel_logout_uri=receiver.url("/live"))
    fresh_browser = client.application.test_client()
    login(fresh_browser)
    _, live_sid = sid_of(fresh_browser, live)
    # The first browser went quiet 31 minutes ago (the test database is shared with the CLI
    # process, whose clock is real: move the session's clock instead).
    idle_since = clock.now() - timedelta(seconds=policy().session.idle_timeout + 60)
    db.session.execute(update(SsoSession).where(SsoSession.id == sid)
                       .values(last_seen_at=idle_since))
    db.session.commit()
    result = subprocess.run([IDP, "sessions", "expire", "--json"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["ended"] == {"absolute": 0, "idle": 1}
    assert out["backchannel"]["delivered"] == 1
    ended = _ended(sid)
    assert ended.ended_at is not None and ended.end_reason == "idle"
    assert _ended(live_sid).ended_at is None
    [post] = receiver.posts
    assert post.path == "/backchannel-logout"
    assert decode(client, post.logout_token).claims["sid"] == sid
    # Run again: nothing more to do.
    again = subprocess.run([IDP, "sessions", "expire", "--json"], env={**os.environ, **env},
                           capture_output=True, text=True, timeout=60)
    assert json.loads(again.stdout)["ended"] == {"absolute": 0, "idle": 0}
    assert len(receiver.posts) == 1


def test_sessions_deliver_runs_as_a_real_process(ctx, client, env, receiver):
    rp, id_token, sid = _signed_in_rp(client, receiver)
    account_settings.sign_out_everywhere(_user(), "helpdesk", actor="test")
    db.session.commit()  # queued, not yet sent (no response, no CLI wrapper here)
    result = subprocess.run([IDP, "sessions", "deliver", "--json"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"attempted": 1, "delivered": 1, "failed": 0,
                                         "abandoned": 0, "pending": 0}
    text = subprocess.run([IDP, "sessions", "deliver"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "0 attempted" in text.stdout
    assert len(receiver.posts) == 1


def test_expire_ends_sessions_past_the_absolute_timeout_even_when_active(ctx, client, receiver,
                                                                         frozen):
    from idp.sessions import service as sessions

    rp, id_token, sid = _signed_in_rp(client, receiver)
    frozen.advance(policy().session.absolute_timeout + 1)
    db.session.execute(update(SsoSession).where(SsoSession.id == sid)
                       .values(last_seen_at=clock.now()))  # busy until now: not idle
    db.session.commit()
    ended = sessions.expire()
    db.session.commit()
    assert ended == {"absolute": [sid], "idle": []}
    assert _ended(sid).end_reason == "absolute"
    assert backchannel.deliver_pending().delivered == 1
    [post] = receiver.posts
    assert decode(client, post.logout_token).claims["sid"] == sid
