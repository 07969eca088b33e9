"""Introspection and userinfo from the node-local revocation cache (issue 26,
idp/oidc/revocation_cache.py): no database read in the common case, a revocation in this
process seen at once, one committed by another node (here: another connection, outside this
process's sessions, and no Redis) seen once the epoch reading is older than the bound, and
never a record read before a revocation kept after it. The cache's clock is held still and
moved by the tests: no timed assertions. The two-process version, with Redis, is in
tests/e2e/test_two_nodes.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
from joserfc import jws
from sqlalchemy import update

from idp.context import policy
from idp.extensions import db
from idp.oidc import revocation_cache
from idp.oidc.models import AccessTokenRecord
from tests.helpers import basic, exchange, get_code, login, make_client, make_user
from tests.integration.test_sql_budget import counting


class Clock:
    def __init__(self) -> None:
        self.now = 1e9

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def held(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(revocation_cache, "_clock", clock)
    revocation_cache.clear()
    return clock


@pytest.fixture
def signed_in(app, client, held):
    with app.app_context():
        make_user()
        rp = make_client()
    assert login(client).status_code == 302
    code, verifier, _ = get_code(client, rp)
    tokens = exchange(client, rp, code, verifier).get_json()
    return rp, tokens


def _introspect(client, rp, token) -> dict:
    response = client.post("/introspect", headers=basic(rp), data={"token": token})
    assert response.status_code == 200
    return response.get_json()


def _userinfo(client, token):
    return client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})


def _revoke_elsewhere(app, jti: str) -> None:
    """What another node's revoking transaction leaves in the database: the record revoked and
    the epoch moved, committed outside this process's sessions (no after-commit hook here)."""
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(update(AccessTokenRecord.__table__)
                     .where(AccessTokenRecord.__table__.c.jti == jti)
                     .values(revoked_at=AccessTokenRecord.__table__.c.issued_at))
        if not conn.execute(revocation_cache._BUMP).rowcount:  # emptied by the last test
            conn.execute(revocation_cache._FIRST)


def _jti(token: str) -> str:
    return json.loads(jws.extract_compact(token.encode()).payload)["jti"]


def test_warm_introspection_and_userinfo_read_nothing(app, client, signed_in):
    rp, tokens = signed_in
    token = tokens["access_token"]
    assert _introspect(client, rp, token)["active"] is True  # cold: the database
    assert _userinfo(client, token).status_code == 200
    with counting(app) as counter:
        body = _introspect(client, rp, token)
        info = _userinfo(client, token)
    assert body["active"] is True and body["username"] == "drsmith"
    assert info.status_code == 200 and info.get_json()["sub"] == body["sub"]
    assert len(counter) == 0, counter.report()


def test_a_cold_cache_reads_the_database(app, client, signed_in):
    rp, tokens = signed_in
    with counting(app) as counter:
        assert _introspect(client, rp, tokens["access_token"])["active"] is True
    assert len(counter) >= 1  # the epoch and the record


def test_a_revocation_in_this_process_is_seen_at_once(app, client, signed_in):
    rp, tokens = signed_in
    token = tokens["access_token"]
    assert _introspect(client, rp, token)["active"] is True
    assert _userinfo(client, token).status_code == 200
    revoked = client.post("/revoke", headers=basic(rp), data={"token": token})
    assert revoked.status_code == 200
    assert _introspect(client, rp, token) == {"active": False}
    assert _userinfo(client, token).status_code == 401


def test_a_revocation_on_another_node_is_seen_within_the_bound(app, client, signed_in, held):
    rp, tokens = signed_in
    token = tokens["access_token"]
    with app.app_context():
        bound = policy().tokens.revocation_cache_ms / 1000
    assert _introspect(client, rp, token)["active"] is True
    assert _userinfo(client, token).status_code == 200
    _revoke_elsewhere(app, _jti(token))
    # inside the bound this node may still answer from its cache: the stated window
    held.now += bound / 2
    assert _introspect(client, rp, token)["active"] is True
    # once its epoch reading is as old as the bound, it reads the epoch again: refused
    held.now += bound / 2
    assert _introspect(client, rp, token) == {"active": False}
    assert _userinfo(client, token).status_code == 401


def test_a_disabled_account_on_another_node_is_refused_within_the_bound(app, client,
                                                                        signed_in, held):
    """Disabling an account revokes its tokens (idp.accounts.settings.set_disabled), which
    moves the epoch: the cached claims go with the cached records."""
    from idp.accounts.models import User

    rp, tokens = signed_in
    token = tokens["access_token"]
    assert _userinfo(client, token).status_code == 200
    users = User.__table__
    with app.app_context():
        bound = policy().tokens.revocation_cache_ms / 1000
        with db.engine.begin() as conn:  # what the other node's transaction leaves
            conn.execute(update(users).where(users.c.username == "drsmith")
                         .values(disabled=True))
    _revoke_elsewhere(app, _jti(token))
    assert _userinfo(client, token).status_code == 200  # within the bound, from the cache
    held.now += bound
    assert _userinfo(client, token).status_code == 401


def test_a_record_read_while_the_epoch_moved_is_not_kept(app, held):
    with app.app_context():
        revocation_cache.current_epoch()

        def load():
            revocation_cache.clear()  # a revocation committed while the row was read
            with revocation_cache._lock:
                revocation_cache._epoch = (revocation_cache._epoch or 0) + 1
            return ("a row read before it",)

        assert revocation_cache.record("some-jti", load) == ("a row read before it",)
        assert "some-jti" not in revocation_cache._records
        db.session.rollback()


def test_the_cache_off_reads_every_time(app, client, signed_in, monkeypatch):
    rp, tokens = signed_in
    with app.app_context():
        tokens_policy = policy().tokens
    off = dataclasses.replace(tokens_policy, revocation_cache_ms=0)
    monkeypatch.setattr(revocation_cache, "_bound",
                        lambda: off.revocation_cache_ms / 1000)
    assert _introspect(client, rp, tokens["access_token"])["active"] is True
    with counting(app) as counter:
        assert _introspect(client, rp, tokens["access_token"])["active"] is True
    assert len(counter) == 1, counter.report()  # the record, as before the cache


def test_cached_claims_are_only_for_the_tokens_subject(app, client, signed_in):
    """An account id can come again (SQLite reuses the highest id after a delete; the test
    tables are emptied under a running server): claims cached for the id are served only to a
    token whose `sub` is theirs, and a token whose `sub` is not the account's is refused."""
    _, tokens = signed_in
    first = _userinfo(client, tokens["access_token"])
    assert first.status_code == 200
    with app.app_context():
        user_id = db.session.execute(db.select(AccessTokenRecord.user_id)).scalars().first()
        build = lambda user: {"sub": user.subject}  # noqa: E731
        subject = first.get_json()["sub"]
        assert revocation_cache.user_info(user_id, "openid", build, subject)[0]
        assert revocation_cache.user_info(user_id, "openid", build, subject)[1] == {
            "sub": subject}  # cached now
        assert revocation_cache.user_info(user_id, "openid", build, "someone-else") == (
            False, None)
