"""Group commit (idp/audit/group_commit.py): a batch of token issuances in one transaction,
the audit chain head advanced once per batch, the chain hashed in batch order; a refresh
token claimed twice in one batch; a stage at fault fails alone; the setting.

Batches are built deterministically: stages staged by the real issuance path, then written by
a committer's flush() (what the request leading a batch calls)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, select

from idp import clock
from idp.audit import group_commit
from idp.audit.models import AuditEvent, AuditHead
from idp.audit.service import verify
from idp.config import ConfigError, Settings
from idp.extensions import db
from idp.oidc import tokens
from idp.oidc.auth_context import AuthContext
from idp.oidc.models import AccessTokenRecord, RefreshToken
from idp.oidc.server import _CLAIM_REFRESH, record_issue, server, token_generator
from tests.helpers import basic, exchange, get_code, login, make_client, make_user

CC = {"grant_type": "client_credentials", "scope": "system/Patient.rs"}


@pytest.fixture
def service(ctx):
    return make_client(name="Lab interface", grant_types=["client_credentials"],
                       redirect_uri="https://lab.example/cb", scope="system/Patient.rs")


def _stage(client_id: str, claim: dict | None = None) -> tuple[group_commit.Stage, str]:
    """What one client_credentials request stages (and, with `claim`, a refresh claim)."""
    client = server.query_client(client_id)
    with group_commit.staged() as stage:
        assert stage is not None
        if claim is not None:
            assert group_commit.check(db.session, _CLAIM_REFRESH, claim, lambda: None)
        token = token_generator(grant_type="client_credentials", client=client,
                                scope="system/Patient.rs", include_refresh_token=False)
        record_issue(token, client, None, "client_credentials", ip="192.0.2.7")
    db.session.rollback()  # the request wrote nothing of its own
    return stage, stage.writes[0][1]["jti"]


@contextmanager
def statements() -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def _issued() -> int:
    return db.session.query(AuditEvent).filter(AuditEvent.event == "token.issued").count()


def _committer() -> group_commit.Committer:
    return group_commit.Committer(db.engine, 256, 0.0)


def test_a_batch_is_one_transaction_and_advances_the_head_once(ctx, service):
    first, jti = _stage(service.client_id)
    record_issue({"scope": ""}, server.query_client(service.client_id), None,
                 "client_credentials", ip="192.0.2.1")  # an event before, unstaged
    db.session.commit()
    chain, base = db.session.execute(select(AuditEvent.chain, AuditEvent.chain_seq)
                                     .order_by(AuditEvent.seq.desc()).limit(1)).one()
    db.session.rollback()
    batch = [first] + [_stage(service.client_id)[0] for _ in range(4)]
    with statements() as seen:
        _committer().flush(batch)
    head_updates = [s for s in seen if s.lstrip().upper().startswith("UPDATE AUDIT_HEAD")]
    assert len(head_updates) == 1, seen  # one claim of this process's chain for the batch
    assert sum(s.lstrip().upper().startswith("INSERT") for s in seen) == 2  # executemany each
    seqs = [stage.seqs[0] for stage in batch]
    assert all(len(stage.seqs) == 1 for stage in batch) and seqs == sorted(seqs)
    positions = dict(db.session.execute(select(AuditEvent.seq, AuditEvent.chain_seq)
                                        .where(AuditEvent.seq.in_(seqs))).all())
    assert [positions[seq] for seq in seqs] == [base + i for i in range(1, 6)]  # in order
    assert all(stage.error is None and not stage.refused for stage in batch)
    assert db.session.get(AuditHead, chain).seq == base + 5
    assert verify() == (True, base + 5, None)
    assert db.session.get(AccessTokenRecord, jti).client_id == service.client_id
    assert db.session.query(AccessTokenRecord).count() == 5


def test_a_refresh_token_claimed_twice_in_one_batch_is_refused_the_second_time(ctx, service):
    user = make_user()
    ctx_ = AuthContext(sid=None, auth_time=clock.now(), acr=None, family_id="fam-1")
    client = server.query_client(service.client_id)
    tokens.issue_refresh_token(client, user, "openid", ctx_)
    db.session.commit()
    token_id = db.session.execute(select(RefreshToken.id)).scalar_one()
    claim = {"token_id": token_id, "now": clock.now()}
    (first, jti_first), (second, jti_second) = (_stage(service.client_id, claim),
                                                _stage(service.client_id, claim))
    _committer().flush([first, second])
    assert not first.refused and second.refused and second.seqs == []
    assert db.session.get(AccessTokenRecord, jti_first) is not None
    assert db.session.get(AccessTokenRecord, jti_second) is None  # nothing of it written
    assert _issued() == 1
    assert verify()[0] is True


def test_a_stage_at_fault_fails_alone(ctx, service):
    good, jti_good = _stage(service.client_id)
    bad, _ = _stage(service.client_id)
    bad.writes[0] = (bad.writes[0][0], {**bad.writes[0][1], "jti": jti_good})  # a duplicate
    other, jti_other = _stage(service.client_id)
    _committer().flush([good, bad, other])
    assert good.error is None and other.error is None and bad.error is not None
    assert db.session.get(AccessTokenRecord, jti_good) is not None
    assert db.session.get(AccessTokenRecord, jti_other) is not None
    assert _issued() == 2
    assert verify()[0] is True


def test_token_endpoint_answers_once_the_batch_committed(app, client, service):
    committer = group_commit.committer_for(db.engine)
    before = committer.stages
    for _ in range(3):
        answer = client.post("/token", headers=basic(service), data=CC)
        assert answer.status_code == 200
        jti = tokens.verify_access_token(answer.get_json()["access_token"])[0]["jti"]
        assert db.session.get(AccessTokenRecord, jti) is not None  # durable when answered
    assert committer.stages == before + 3
    assert _issued() == 3 and verify()[0] is True


def test_group_commit_off_writes_in_the_requests_transaction(app, client, service,
                                                             monkeypatch):
    import dataclasses

    config = app.extensions["idp"]
    monkeypatch.setattr(config, "settings", dataclasses.replace(config.settings,
                                                                 group_commit=False))
    committer = group_commit.committer_for(db.engine)
    before = committer.stages
    answer = client.post("/token", headers=basic(service), data=CC)
    assert answer.status_code == 200 and committer.stages == before
    assert _issued() == 1 and verify()[0] is True


def test_the_settings(tmp_path):
    base = {"IDP_INSTANCE_DIR": str(tmp_path), "IDP_SECRET_KEY": "x" * 40}
    assert Settings.from_env(base).group_commit is True
    off = Settings.from_env({**base, "IDP_GROUP_COMMIT": "0", "IDP_GROUP_COMMIT_WAIT_US": "2000",
                             "IDP_GROUP_COMMIT_MAX_ROWS": "64"})
    assert (off.group_commit, off.group_commit_wait_ms, off.group_commit_max_rows) == \
        (False, 2.0, 64)
    for name, value in (("IDP_GROUP_COMMIT", "2"), ("IDP_GROUP_COMMIT_WAIT_US", "2001"),
                        ("IDP_GROUP_COMMIT_MAX_ROWS", "0"), ("IDP_GROUP_COMMIT", "yes")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({**base, name: value})


def test_a_refresh_goes_through_the_committer_and_a_reuse_still_revokes(client, ctx):
    make_user()
    rp = make_client()
    assert login(client).status_code == 302
    code, verifier, _ = get_code(client, rp)
    first = exchange(client, rp, code, verifier).get_json()["refresh_token"]
    committer = group_commit.committer_for(db.engine)
    before = committer.stages
    rotated = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": first})
    assert rotated.status_code == 200 and committer.stages == before + 1
    fresh = rotated.get_json()["refresh_token"]
    assert client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": first}).status_code == 400
    assert client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": fresh}).status_code == 400
    events = [e for (e,) in db.session.execute(select(AuditEvent.event)
                                                .order_by(AuditEvent.seq))]
    assert events[-2:] == ["token.issued", "token.refresh_reused"]
    assert verify()[0] is True
