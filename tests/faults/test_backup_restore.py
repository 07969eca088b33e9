"""Backup and restore: `idp backup` of a live database and its key directory, `idp restore`
into a fresh database (a new SQLite file; a new PostgreSQL database) and an empty key directory,
then the audit chain verifies and the account signs in with its password and its authenticator
app (whose seed only the restored data-encryption key can decrypt). Both kinds run in every
suite run: PostgreSQL at postgresql://postgres@127.0.0.1:5432, whatever the suite runs on."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pyotp
import pytest
import requests
import sqlalchemy as sa

from tests.faults.conftest import gunicorn_node
from tests.helpers import csrf_from

IDP = str(Path(sys.executable).parent / "idp")
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PASSWORD = "Copper-Harbor-Violin-62?"


def _idp(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([IDP, *args], env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request, tmp_path: Path):
    """(source URL, fresh target URL) of one kind; PostgreSQL ones are dropped afterwards."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'live.sqlite3'}", \
            f"sqlite:///{tmp_path / 'restored.sqlite3'}"
        return
    schema = f"bk_{uuid.uuid4().hex[:10]}"
    fresh = f"restore_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{fresh}"'))
    options = f"?options=-csearch_path%3D{schema}"
    try:
        yield "postgresql", f"{PG_SERVER}/test{options}", f"{PG_SERVER}/{fresh}{options}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)'))
        admin.dispose()


def test_backup_restores_into_a_fresh_database_and_signs_in(databases, tmp_path: Path,
                                                           env: dict[str, str]):
    kind, live_url, fresh_url = databases
    live = {**env, "DATABASE_URL": live_url, "IDP_KEYS_DIR": str(tmp_path / "keys-live"),
            "IDP_INSTANCE_DIR": str(tmp_path / "instance-live")}
    _idp(live, "db", "upgrade")
    _idp(live, "users", "create", "--username", "np.backup", "--email",
         "np.backup@hospital.example", "--role", "physician", "--password", PASSWORD)
    secret = json.loads(_idp(live, "mfa", "enroll-totp", "np.backup", "--json").stdout)["secret"]
    live_kids = sorted(k["kid"] for k in json.loads(
        _idp(live, "keys", "list", "--json").stdout))

    target = tmp_path / "backup"
    manifest = json.loads(_idp(live, "backup", "--to", str(target), "--json").stdout)
    assert manifest["database"] == kind and manifest["audit_head"]["seq"] >= 2
    assert "data-encryption.key" in manifest["keys"]
    assert _mode(target) == 0o700
    for path in [*target.iterdir(), *(target / "keys").iterdir()]:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    # a second backup into the same place is refused
    again = _idp(live, "backup", "--to", str(target), check=False)
    assert again.returncode == 1 and "not empty" in again.stderr

    restored = {**env, "DATABASE_URL": fresh_url, "IDP_KEYS_DIR": str(tmp_path / "keys-new"),
                "IDP_INSTANCE_DIR": str(tmp_path / "instance-new")}
    report = json.loads(_idp(restored, "restore", "--from", str(target), "--json").stdout)
    assert report["audit_intact"] is True and report["audit_events"] == \
        manifest["audit_head"]["seq"]
    assert json.loads(_idp(restored, "audit", "verify", "--json").stdout)["intact"] is True
    assert sorted(k["kid"] for k in json.loads(
        _idp(restored, "keys", "list", "--json").stdout)) == live_kids
    # restoring over a database that is not empty any more is refused
    twice = _idp(restored, "restore", "--from", str(target), check=False)
    assert twice.returncode == 1 and "not empty" in twice.stderr

    with gunicorn_node(env, tmp_path / "restored-node", **{
            k: restored[k] for k in ("DATABASE_URL", "IDP_KEYS_DIR", "IDP_INSTANCE_DIR")}) \
            as node:
        http = requests.Session()
        page = http.get(node.url("/login"), timeout=10)
        first = http.post(node.url("/login"), allow_redirects=False, timeout=30, data={
            "username": "np.backup", "password": PASSWORD, "csrf_token": csrf_from(page.text)})
        assert first.status_code == 302 and "/mfa/challenge" in first.headers["Location"]
        challenge = http.get(node.url("/mfa/challenge"), timeout=10)
        done = http.post(node.url("/mfa/challenge"), allow_redirects=False, timeout=30, data={
            "code": pyotp.TOTP(secret).now(), "csrf_token": csrf_from(challenge.text)})
        assert done.status_code == 302, done.text[:300]
        assert "/mfa" not in done.headers["Location"] and "/login" not in done.headers["Location"]
        jwks = http.get(node.url("/jwks.json"), timeout=10).json()
        assert {k["kid"] for k in jwks["keys"]} == set(live_kids)  # same keys sign and verify
    assert json.loads(_idp(restored, "audit", "verify", "--json").stdout)["intact"] is True


def test_restore_refuses_a_key_directory_holding_other_keys(tmp_path: Path,
                                                            env: dict[str, str]):
    live = {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'a.sqlite3'}",
            "IDP_KEYS_DIR": str(tmp_path / "keys-a"), "IDP_INSTANCE_DIR": str(tmp_path / "i")}
    _idp(live, "db", "upgrade")
    _idp(live, "keys", "list")  # creates the keys
    _idp(live, "backup", "--to", str(tmp_path / "b"))
    other = {**live, "DATABASE_URL": f"sqlite:///{tmp_path / 'c.sqlite3'}",
             "IDP_KEYS_DIR": str(tmp_path / "keys-c")}
    _idp(other, "keys", "list")  # a key directory of its own, other keys
    refused = _idp(other, "restore", "--from", str(tmp_path / "b"), check=False)
    assert refused.returncode == 1 and "already holds other keys" in refused.stderr
