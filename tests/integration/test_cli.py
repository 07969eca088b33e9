"""The `idp` command, run as operators run it: a real process against the test database."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, update

from idp.audit.models import AuditEvent
from idp.extensions import db

IDP = str(Path(sys.executable).parent / "idp")


@pytest.fixture
def run(env, app):
    def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([IDP, *args], env={**os.environ, **env}, capture_output=True,
                                text=True, timeout=60)
        if check:
            assert result.returncode == 0, result.stderr
        return result
    return _run


def test_db_upgrade_is_idempotent(run):
    from alembic.script import ScriptDirectory

    from idp.config import MIGRATIONS_DIR

    head = ",".join(sorted(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()))
    assert json.loads(run("db", "upgrade", "--json").stdout)["revision"] == head


def test_migrations_match_the_models(ctx):
    """A model change without its migration would pass on create_all and fail in production."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


def test_clients_create_prints_secret_once_and_stores_only_a_hash(run, ctx):
    out = json.loads(run("clients", "create", "--name", "Portal", "--redirect-uri",
                         "https://portal.example/cb", "--scope", "openid profile", "--first-party",
                         "--json").stdout)
    assert out["client_secret"] and out["token_endpoint_auth_method"] == "client_secret_basic"
    from idp.oidc.models import Client

    stored = db.session.query(Client).filter_by(client_id=out["client_id"]).one()
    assert stored.client_secret_hash != out["client_secret"]
    assert stored.check_client_secret(out["client_secret"]) and stored.first_party
    public = json.loads(run("clients", "create", "--name", "App", "--redirect-uri",
                            "http://127.0.0.1/cb", "--public", "--json").stdout)
    assert public["client_secret"] is None and public["token_endpoint_auth_method"] == "none"


@pytest.mark.parametrize("args,needle", [
    (["--redirect-uri", "http://rp.example/cb"], "https"),
    (["--redirect-uri", "https://rp.example/cb#frag"], "fragment"),
    (["--redirect-uri", "https://*.example/cb"], "wildcard"),
    (["--redirect-uri", "https://rp.example/cb", "--scope", "openid bogus"], "unknown"),
    (["--redirect-uri", "https://rp.example/cb", "--grant-type", "password"], "password"),
])
def test_clients_create_refuses_bad_metadata(run, args, needle):
    result = run("clients", "create", "--name", "Bad", *args, check=False)
    assert result.returncode == 2 and needle in result.stderr
    assert "Traceback" not in result.stderr


def test_users_create_and_login(run, client):
    out = json.loads(run("users", "create", "--username", "np.lee", "--email", "lee@h.example",
                         "--role", "nurse_practitioner", "--npi", "1245319599", "--password",
                         "Quiet-Harbor-Lamp-77!", "--json").stdout)
    assert out["username"] == "np.lee" and out["sub"]
    from tests.helpers import login

    signed = login(client, "1245319599", "Quiet-Harbor-Lamp-77!", mfa=False)
    assert signed.headers["Location"] == "/mfa/challenge"
    # a new account has no second factor yet: enrollment comes before anything else
    assert client.get("/mfa/challenge").headers["Location"] == "/mfa/enroll"
    dup = run("users", "create", "--username", "np.lee", "--email", "x@h.example", "--role",
              "physician", "--password", "x", check=False)
    assert dup.returncode == 2 and "exists" in dup.stderr


def test_keys_list_and_rotate(run):
    before = json.loads(run("keys", "list", "--json").stdout)
    rotated = json.loads(run("keys", "rotate", "--alg", "ES256", "--delay", "600",
                             "--json").stdout)
    after = {k["kid"]: k["state"] for k in json.loads(run("keys", "list", "--json").stdout)}
    assert after[rotated["created"][0]] == "pending"
    assert {k["kid"] for k in before} <= set(after)


def test_audit_verify_detects_tampering(run, ctx, client):
    from tests.helpers import login, make_user

    make_user()
    login(client)
    login(client, password="wrong-password")
    assert json.loads(run("audit", "verify", "--json").stdout)["intact"] is True
    tampered = db.session.query(AuditEvent.seq).filter_by(event="login.failure").scalar()
    db.session.execute(update(AuditEvent).where(AuditEvent.seq == tampered)
                       .values(ip="10.9.9.9"))
    db.session.commit()
    broken = run("audit", "verify", "--json", check=False)
    report = json.loads(broken.stdout)
    assert broken.returncode == 1 and report["intact"] is False
    assert report["first_broken_seq"] == tampered  # the edited row, not a later one


def test_a_failed_transaction_leaves_no_audit_row(ctx):
    """Audit events are written in the transaction of the change they record: a change that
    rolls back takes its event with it (and the chain head too)."""
    from idp.audit import service as audit
    from idp.audit.models import AuditHead
    from tests.helpers import make_user

    user = make_user()
    before = db.session.query(AuditEvent).count()
    heads = dict(db.session.execute(select(AuditHead.id, AuditHead.seq)).all())
    user.disabled = True
    audit.record("user.disabled", user_id=user.id, actor="test")
    db.session.flush()
    db.session.rollback()  # e.g. a constraint failed later in the same request
    assert db.session.query(AuditEvent).count() == before
    assert dict(db.session.execute(select(AuditHead.id, AuditHead.seq)).all()) == heads
    assert db.session.get(type(user), user.id).disabled is False
    assert audit.verify()[0] is True
