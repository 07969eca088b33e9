"""Refresh tokens of both kinds (docs/refresh-tokens.md): session-bound ones (a client
registered for refresh_token, no offline_access) die with the SSO session that issued them,
however it ends; offline ones (offline_access) outlive it. Every refresh of an `openid` grant
answers a fresh ID token (OIDC Core §12.2)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from idp import create_app
from idp.accounts import settings as account_settings
from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.config import Settings
from idp.context import policy
from idp.core.crypto import digest
from idp.extensions import db
from idp.oidc.models import AccessTokenRecord, RefreshToken
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession
from tests.conftest import TEST_POLICY, ClosingClient
from tests.helpers import basic, csrf_from, exchange, get_code, login, make_client, make_user

SCOPE = "openid profile email"


def _keys(http) -> KeySet:
    return KeySet.import_key_set(http.get("/jwks.json").get_json())


def _claims(http, token: str) -> dict:
    return jwt.decode(token, _keys(http)).claims


def _signed_in(http, scope: str = SCOPE, **client):
    if db.session.execute(select(User).where(User.username == "drsmith")).first() is None:
        make_user()
    rp = make_client(scope=scope, post_logout_redirect_uris=["https://rp.example/bye"],
                     **client)
    assert login(http).status_code == 302
    code, verifier, _ = get_code(http, rp, scope=scope, nonce="n-0S6_WzA2Mj")
    response = exchange(http, rp, code, verifier)
    assert response.status_code == 200, response.text
    return rp, response.get_json()


def _refresh(http, rp, refresh_token: str):
    return http.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": refresh_token})


def _refused(response) -> None:
    assert response.status_code == 400, response.text
    assert response.get_json()["error"] == "invalid_grant"
    assert response.headers["Cache-Control"] == "no-store"


def _family_revoked(family_id: str) -> None:
    db.session.rollback()
    rows = [*db.session.execute(select(RefreshToken).where(
        RefreshToken.family_id == family_id)).scalars(),
        *db.session.execute(select(AccessTokenRecord).where(
            AccessTokenRecord.family_id == family_id)).scalars()]
    assert len(rows) >= 2 and all(r.revoked_at is not None for r in rows)


def _row(refresh_token: str) -> RefreshToken:
    db.session.rollback()
    return db.session.execute(select(RefreshToken).where(
        RefreshToken.token_hash == digest(refresh_token))).scalar_one()


def _logout(http, id_token: str):
    return http.get("/logout", query_string={
        "id_token_hint": id_token, "post_logout_redirect_uri": "https://rp.example/bye"})


# -- issued ----------------------------------------------------------------------------------
def test_openid_profile_email_gives_a_session_bound_token(ctx, client):
    rp, tokens = _signed_in(client)
    row = _row(tokens["refresh_token"])
    sso = db.session.get(SsoSession, row.sid)
    assert row.session_bound and tokens["scope"] == SCOPE
    # never past the session's absolute end, though the refresh lifetime is 30 days
    assert row.expires_at <= sso.created_at + timedelta(
        seconds=policy().session.absolute_timeout)


def test_offline_access_gives_an_offline_token(ctx, client):
    rp, tokens = _signed_in(client, scope=f"{SCOPE} offline_access")
    assert not _row(tokens["refresh_token"]).session_bound


def test_no_refresh_token_for_a_client_not_registered_for_the_grant(ctx, client):
    rp, tokens = _signed_in(client, grant_types=["authorization_code"])
    assert "refresh_token" not in tokens and tokens["access_token"]


@pytest.fixture
def session_bound_off(app, env):
    """The IdP with policies/refresh.toml session_bound = false, on the session's database."""
    off = create_app(Settings.from_env(env), policy_overrides={
        **TEST_POLICY, "refresh": {"session_bound": False}})
    off.config["TESTING"] = True
    off.test_client_class = ClosingClient
    return off


def test_session_bound_tokens_can_be_switched_off_in_policy(session_bound_off):
    http = session_bound_off.test_client()
    with session_bound_off.app_context():
        rp, tokens = _signed_in(http)
        assert "refresh_token" not in tokens
        kinds = http.get("/.well-known/openid-configuration").get_json()[
            "refresh_token_kinds_supported"]
        assert kinds == {"offline_access": "offline"}
        rp, tokens = _signed_in(http, scope=f"{SCOPE} offline_access", name="Offline RP")
        assert not _row(tokens["refresh_token"]).session_bound


def test_discovery_says_which_kind_is_which(ctx, client):
    meta = client.get("/.well-known/openid-configuration").get_json()
    assert meta["refresh_token_kinds_supported"] == {"offline_access": "offline",
                                                     "default": "session_bound"}
    assert "refresh_token" in meta["grant_types_supported"]


# -- the ID token of a refresh (OIDC Core §12.2) -----------------------------------------------
def test_each_refresh_answers_a_fresh_id_token_of_the_same_authentication(ctx, client, frozen):
    rp, tokens = _signed_in(client)
    first = _claims(client, tokens["id_token"])
    assert first["nonce"] == "n-0S6_WzA2Mj"
    refresh = tokens["refresh_token"]
    for _ in range(2):
        frozen.advance(120)
        response = _refresh(client, rp, refresh)
        assert response.status_code == 200, response.text
        body = response.get_json()
        refresh = body["refresh_token"]
        claims = _claims(client, body["id_token"])
        for same in ("iss", "sub", "aud", "azp", "auth_time", "acr", "amr", "sid", "email"):
            assert claims[same] == first[same], same
        assert claims["iat"] > first["iat"] and claims["exp"] > first["exp"]
        assert "nonce" not in claims
        assert claims["at_hash"] != first["at_hash"]  # bound to the new access token


def test_a_refreshed_id_token_is_a_valid_logout_hint(ctx, client):
    rp, tokens = _signed_in(client)
    body = _refresh(client, rp, tokens["refresh_token"]).get_json()
    bye = _logout(client, body["id_token"])
    assert bye.status_code == 302 and bye.headers["Location"] == "https://rp.example/bye"
    _refused(_refresh(client, rp, body["refresh_token"]))


# -- attacks: a session-bound token after its session ---------------------------------------
def test_after_logout_refused_and_family_revoked(ctx, client):
    rp, tokens = _signed_in(client)
    rotated = _refresh(client, rp, tokens["refresh_token"]).get_json()
    assert _logout(client, rotated["id_token"]).status_code == 302
    _refused(_refresh(client, rp, rotated["refresh_token"]))
    _family_revoked(_row(rotated["refresh_token"]).family_id)
    bearer = {"Authorization": f"Bearer {rotated['access_token']}"}
    assert client.get("/userinfo", headers=bearer).status_code == 401


def test_after_idle_timeout_refused_family_revoked_session_ended(ctx, client, frozen):
    rp, tokens = _signed_in(client)
    frozen.advance(policy().session.idle_timeout + 1)
    response = _refresh(client, rp, tokens["refresh_token"])
    _refused(response)
    row = _row(tokens["refresh_token"])
    _family_revoked(row.family_id)
    sso = db.session.get(SsoSession, row.sid)
    assert sso.ended_at is not None and sso.end_reason == "idle"
    assert db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "token.refresh_session_over")).scalars().first() is not None


def test_refreshing_keeps_the_session_from_idling(ctx, client, frozen):
    """The clinician works in the relying party: its refreshes are the session's activity."""
    rp, tokens = _signed_in(client)
    refresh = tokens["refresh_token"]
    for _ in range(3):
        frozen.advance(policy().session.idle_timeout - 60)
        response = _refresh(client, rp, refresh)
        assert response.status_code == 200, response.text
        refresh = response.get_json()["refresh_token"]
    assert client.get("/account").status_code == 200  # the browser's session lives too


def test_after_absolute_timeout_refused_and_family_revoked(ctx, client, frozen):
    rp, tokens = _signed_in(client)
    refresh, step = tokens["refresh_token"], policy().session.idle_timeout - 60
    elapsed = 0
    while elapsed + step < policy().session.absolute_timeout:
        frozen.advance(step)
        elapsed += step
        response = _refresh(client, rp, refresh)
        assert response.status_code == 200, (elapsed, response.text)
        refresh = response.get_json()["refresh_token"]
    frozen.advance(step)
    _refused(_refresh(client, rp, refresh))
    row = _row(refresh)
    _family_revoked(row.family_id)
    assert db.session.get(SsoSession, row.sid).end_reason == "absolute"


def test_after_sign_out_everywhere_refused_and_family_revoked(ctx, client):
    rp, tokens = _signed_in(client)
    page = client.get("/account/sessions")
    client.post("/account/sessions/end-all", data={"csrf_token": csrf_from(page.text)})
    _refused(_refresh(client, rp, tokens["refresh_token"]))
    _family_revoked(_row(tokens["refresh_token"]).family_id)


def test_after_deprovisioning_refused_and_family_revoked(ctx, client):
    rp, tokens = _signed_in(client)
    user = db.session.execute(select(User).where(User.username == "drsmith")).scalar_one()
    account_settings.set_disabled(user, True, actor="test")
    db.session.commit()
    _refused(_refresh(client, rp, tokens["refresh_token"]))
    _family_revoked(_row(tokens["refresh_token"]).family_id)


def test_session_ended_by_its_timeout_elsewhere_ends_the_token(ctx, client, frozen):
    """`idp sessions expire` (cron) ends an idle session: the session_ended event revokes the
    family at once, before any refresh is tried."""
    rp, tokens = _signed_in(client)
    frozen.advance(policy().session.idle_timeout + 1)
    assert sessions.expire()["idle"]
    db.session.commit()
    _family_revoked(_row(tokens["refresh_token"]).family_id)
    _refused(_refresh(client, rp, tokens["refresh_token"]))


def test_reuse_of_a_rotated_session_bound_token_revokes_the_family(ctx, client):
    rp, tokens = _signed_in(client)
    rotated = _refresh(client, rp, tokens["refresh_token"]).get_json()
    _refused(_refresh(client, rp, tokens["refresh_token"]))
    _refused(_refresh(client, rp, rotated["refresh_token"]))
    _family_revoked(_row(rotated["refresh_token"]).family_id)
    assert _row(rotated["refresh_token"]).session_bound  # rotation kept its kind


# -- offline tokens outlive the session ------------------------------------------------------
@pytest.mark.parametrize("how", ["logout", "idle"])
def test_offline_token_survives_the_end_of_the_session(ctx, client, frozen, how):
    rp, tokens = _signed_in(client, scope=f"{SCOPE} offline_access")
    if how == "logout":
        assert _logout(client, tokens["id_token"]).status_code == 302
    else:
        frozen.advance(policy().session.idle_timeout + 1)
        assert client.get("/account").status_code == 302  # the session is over
    response = _refresh(client, rp, tokens["refresh_token"])
    assert response.status_code == 200, response.text
    body = response.get_json()
    assert not _row(body["refresh_token"]).session_bound
    claims = _claims(client, body["id_token"])
    assert claims["sub"] == _claims(client, tokens["id_token"])["sub"]
