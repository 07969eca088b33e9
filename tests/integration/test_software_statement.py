"""RFC 7591 §2.3 software statements at /register: accepted only from a publisher listed in
IDP_SOFTWARE_STATEMENT_ISSUERS, signed by its key and within its validity; its values take
precedence over plain JSON metadata and it is returned unmodified (also by RFC 7592 reads)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import select

from idp import clock
from idp.admin import service
from idp.admin.models import InitialAccessToken
from idp.audit.models import AuditEvent
from idp.config import ConfigError, Settings
from idp.extensions import db
from idp.oidc.models import Client

PUBLISHER = "https://vendor.example"
META = {"client_name": "Plain JSON name", "redirect_uris": ["https://plain.example/cb"],
        "grant_types": ["authorization_code"], "scope": "openid profile"}


@pytest.fixture(scope="module")
def publisher_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "vendor-1"})


@pytest.fixture
def trusted(ctx, tmp_path: Path, publisher_key, monkeypatch) -> Path:
    path = tmp_path / "publishers.json"
    public = KeySet([publisher_key]).as_dict(private=False)
    path.write_text(json.dumps({PUBLISHER: public}))
    runtime = ctx.extensions["idp"]
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(
        runtime.settings, software_statement_issuers=path))
    return path


def _statement(key: RSAKey, **claims) -> str:
    now = clock.timestamp()
    body = {"iss": PUBLISHER, "iat": now, "exp": now + 3600, "software_id": "vendor-scheduler",
            "client_name": "Vendor Scheduler", "redirect_uris": ["https://vendor.example/cb"],
            **claims}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key)


def _initial() -> str:
    issued = service.issue_initial_token(actor="test", lifetime=3600, uses=1)
    db.session.commit()
    return issued.token


def _register(http, token: str, statement: str | None):
    body = dict(META, **({"software_statement": statement} if statement else {}))
    return http.post("/register", json=body, headers={"Authorization": f"Bearer {token}"})


def _uses_left() -> int:
    db.session.rollback()
    return db.session.execute(select(InitialAccessToken.uses_left)).scalar_one()


def test_a_trusted_statement_takes_precedence_and_is_returned(ctx, client, trusted,
                                                              publisher_key):
    statement = _statement(publisher_key)
    response = _register(client, _initial(), statement)
    assert response.status_code == 201, response.text
    doc = response.get_json()
    assert doc["client_name"] == "Vendor Scheduler"
    assert doc["redirect_uris"] == ["https://vendor.example/cb"]
    assert doc["scope"] == "openid profile"  # not in the statement: the plain value
    assert doc["software_statement"] == statement
    row = db.session.execute(select(Client)).scalar_one()
    assert row.redirect_uris == ["https://vendor.example/cb"] and not row.first_party
    read = client.get(doc["registration_client_uri"].removeprefix("http://idp.test"),
                      headers={"Authorization": f"Bearer {doc['registration_access_token']}"})
    assert read.status_code == 200 and read.get_json()["software_statement"] == statement
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "registration.software_statement_accepted")).scalar_one()
    assert event.detail == {"issuer": PUBLISHER, "software_id": "vendor-scheduler"}


@pytest.mark.parametrize("case", ["unknown_issuer", "wrong_key", "expired", "garbage",
                                  "not_yet_valid"])
def test_unacceptable_statements_are_refused(ctx, client, trusted, publisher_key, case):
    other = RSAKey.generate_key(2048, parameters={"kid": "vendor-1"})
    now = clock.timestamp()
    statement = {
        "unknown_issuer": lambda: _statement(other, iss="https://stranger.example"),
        "wrong_key": lambda: _statement(other),
        "expired": lambda: _statement(publisher_key, iat=now - 7200, exp=now - 3600),
        "not_yet_valid": lambda: _statement(publisher_key, nbf=now + 3600),
        "garbage": lambda: "not.a.jwt",
    }[case]()
    response = _register(client, _initial(), statement)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_software_statement"
    assert db.session.execute(select(Client)).first() is None
    assert _uses_left() == 1  # the initial access token's use is given back


def test_refused_when_no_publisher_is_configured(ctx, client, publisher_key):
    response = _register(client, _initial(), _statement(publisher_key))
    assert response.status_code == 400
    assert "not accepted" in response.get_json()["error_description"]
    assert _register(client, _initial(), None).status_code == 201  # plain JSON still works


def test_configuration_is_checked(tmp_path: Path, env: dict[str, str]):
    bad = tmp_path / "bad.json"
    bad.write_text('{"https://vendor.example": {"keys": [{"kty": "nope"}]}}')
    for value in (str(bad), str(tmp_path / "missing.json")):
        with pytest.raises(ConfigError, match="IDP_SOFTWARE_STATEMENT_ISSUERS"):
            Settings.from_env({**env, "IDP_SOFTWARE_STATEMENT_ISSUERS": value})
