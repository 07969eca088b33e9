"""`idp scim tokens create|list|revoke`, run as operators run it (a real process): the token
is printed once, stored only as its SHA-256, named in the audit trail; a revoked or expired
token is refused with a SCIM 401."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from idp.audit.models import AuditEvent
from idp.core.crypto import digest
from idp.extensions import db
from idp.scim.models import ScimToken
from tests.integration.scim_helpers import Scim
from tests.log_scan import register as register_secret

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


def test_create_list_revoke(run, ctx, client, frozen):
    out = json.loads(run("scim", "tokens", "create", "--name", "Entra ID", "--expires-days",
                         "30", "--json").stdout)
    register_secret("scim token", out["token"])
    assert out["name"] == "Entra ID" and out["token"].startswith("scim_")
    stored = db.session.execute(select(ScimToken)).scalar_one()
    assert stored.token_hash == digest(out["token"]) and out["token"] not in stored.token_hash
    listed = json.loads(run("scim", "tokens", "list", "--json").stdout)
    assert [(t["name"], t["state"]) for t in listed] == [("Entra ID", "active")]
    assert out["token"] not in json.dumps(listed)
    assert Scim(client, out["token"])("GET", "/Users").status_code == 200
    again = run("scim", "tokens", "create", "--name", "Entra ID", "--json", check=False)
    assert again.returncode == 2 and "exists already" in again.stderr
    run("scim", "tokens", "revoke", "Entra ID", "--json")
    refused = Scim(client, out["token"])("GET", "/Users")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.get_json(force=True)["status"] == "401"
    assert run("scim", "tokens", "revoke", "Entra ID", check=False).returncode == 2
    events = [(e.event, e.detail["token_name"]) for e in db.session.execute(
        select(AuditEvent).order_by(AuditEvent.seq)).scalars()]
    assert events == [("scim.token_created", "Entra ID"), ("scim.token_revoked", "Entra ID")]


def test_expired_token_refused(run, ctx, client, frozen):
    out = json.loads(run("scim", "tokens", "create", "--name", "okta", "--expires-days", "1",
                         "--json").stdout)
    register_secret("scim token", out["token"])
    assert Scim(client, out["token"])("GET", "/ServiceProviderConfig").status_code == 200
    frozen.advance(timedelta(days=1, seconds=1).total_seconds())
    assert Scim(client, out["token"])("GET", "/ServiceProviderConfig").status_code == 401


@pytest.mark.parametrize("args", [("--name", ""), ("--name", "bad/name"),
                                  ("--name", "x", "--expires-days", "0"),
                                  ("--name", "x", "--expires-days", "100000")])
def test_bad_create(run, ctx, args):
    assert run("scim", "tokens", "create", *args, check=False).returncode == 2
    assert db.session.execute(select(ScimToken)).first() is None
