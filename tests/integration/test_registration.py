"""Dynamic client registration (RFC 7591) with initial access tokens, and client configuration
management (RFC 7592) with registration access tokens."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select

from idp.admin import service
from idp.admin.models import InitialAccessToken, RegistrationAccessToken
from idp.audit.models import AuditEvent
from idp.core.crypto import digest
from idp.extensions import db
from idp.oidc.models import Client

META = {"client_name": "Scheduling app", "redirect_uris": ["https://sched.example/cb"],
        "post_logout_redirect_uris": ["https://sched.example/bye"],
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "scope": "openid profile email", "token_endpoint_auth_method": "client_secret_basic"}


def _initial(uses: int = 1, lifetime: int = 3600) -> str:
    issued = service.issue_initial_token(actor="test", lifetime=lifetime, uses=uses)
    db.session.commit()
    return issued.token


def _register(http, token: str | None, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.post("/register", json=META if body is None else body, headers=headers)


def test_registration_with_a_valid_initial_access_token(ctx, client):
    token = _initial()
    response = _register(client, token)
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    doc = response.get_json()
    assert doc["client_secret"] and doc["registration_access_token"]
    assert doc["client_secret_expires_at"] == 0 and doc["client_id_issued_at"] > 0
    assert doc["registration_client_uri"].endswith(f"/register/{doc['client_id']}")
    assert doc["redirect_uris"] == META["redirect_uris"]
    assert doc["post_logout_redirect_uris"] == META["post_logout_redirect_uris"]
    row = db.session.execute(select(Client).where(Client.client_id == doc["client_id"])
                             ).scalar_one()
    assert row.client_secret_hash == digest(doc["client_secret"])
    assert not row.first_party and row.require_pkce
    stored = db.session.get(RegistrationAccessToken, doc["client_id"])
    assert stored.token_hash == digest(doc["registration_access_token"])
    assert db.session.execute(select(InitialAccessToken.token_hash)).scalar() == digest(token)
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "client.created")).scalar_one()
    assert event.actor.startswith("registration:")
    # the secret works at the token endpoint (client_credentials is not granted: 400, not 401)
    raw = base64.b64encode(f"{doc['client_id']}:{doc['client_secret']}".encode()).decode()
    answer = client.post("/token", data={"grant_type": "client_credentials"},
                         headers={"Authorization": f"Basic {raw}"})
    assert answer.status_code == 400 and answer.get_json()["error"] == "unauthorized_client"


def test_registration_without_a_valid_initial_access_token(ctx, client, frozen):
    for token in (None, "not-a-token", "x" * 300):
        response = _register(client, token)
        assert response.status_code == 401, token
        assert response.get_json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    response = client.post("/register", json=META, headers={"Authorization": "Basic abc"})
    assert response.status_code == 401
    used = _initial(uses=1)
    assert _register(client, used).status_code == 201
    assert _register(client, used).status_code == 401  # used up
    expired = _initial(lifetime=60)
    frozen.advance(61)
    assert _register(client, expired).status_code == 401
    assert db.session.execute(select(Client)).scalars().all().__len__() == 1


def test_a_token_allows_its_number_of_registrations(ctx, client):
    token = _initial(uses=2)
    assert _register(client, token).status_code == 201
    assert _register(client, token).status_code == 201
    assert _register(client, token).status_code == 401


@pytest.mark.parametrize(("change", "error"), [
    ({"redirect_uris": ["http://sched.example/cb"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["https://sched.example/cb#x"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["https://*.sched.example/cb"]}, "invalid_redirect_uri"),
    ({"redirect_uris": []}, "invalid_redirect_uri"),
    ({"post_logout_redirect_uris": ["http://sched.example/bye"]}, "invalid_redirect_uri"),
    ({"backchannel_logout_uri": "https://u@sched.example/b"}, "invalid_redirect_uri"),
    ({"redirect_uris": "https://sched.example/cb"}, "invalid_client_metadata"),
    ({"scope": "openid everything"}, "invalid_client_metadata"),
    ({"grant_types": ["implicit"]}, "invalid_client_metadata"),
    ({"response_types": ["token"]}, "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "client_secret_jwt"}, "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
    ({"jwks_uri": "https://sched.example/jwks"}, "invalid_client_metadata"),
    ({"client_name": 7}, "invalid_client_metadata"),
])
def test_metadata_errors(ctx, client, change, error):
    token = _initial()
    response = _register(client, token, {**META, **change})
    assert response.status_code == 400, response.text
    assert response.get_json()["error"] == error
    assert db.session.execute(select(Client)).first() is None
    # a refused registration does not spend the token
    assert _register(client, token).status_code == 201


def test_a_body_that_is_not_json(ctx, client):
    token = _initial()
    response = client.post("/register", data="nope", content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_client_metadata"


def test_public_native_client(ctx, client):
    response = _register(client, _initial(), {
        "client_name": "Native", "redirect_uris": ["http://127.0.0.1:7777/cb"],
        "token_endpoint_auth_method": "none"})
    assert response.status_code == 201
    doc = response.get_json()
    assert "client_secret" not in doc and doc["token_endpoint_auth_method"] == "none"


def _registered(http) -> dict:
    return _register(http, _initial()).get_json()


def _auth(doc: dict, token: str | None = None) -> dict:
    return {"Authorization": f"Bearer {token or doc['registration_access_token']}"}


def test_rfc7592_read(ctx, client):
    doc = _registered(client)
    path = f"/register/{doc['client_id']}"
    response = client.get(path, headers=_auth(doc))
    assert response.status_code == 200
    read = response.get_json()
    assert read["client_id"] == doc["client_id"] and read["redirect_uris"] == META[
        "redirect_uris"]
    assert "client_secret" not in read and "registration_access_token" not in read


def test_rfc7592_update(ctx, client):
    doc = _registered(client)
    path = f"/register/{doc['client_id']}"
    body = {**META, "client_id": doc["client_id"], "client_secret": doc["client_secret"],
            "client_name": "Scheduling v2", "redirect_uris": ["https://sched.example/cb2"]}
    response = client.put(path, json=body, headers=_auth(doc))
    assert response.status_code == 200, response.text
    assert response.get_json()["redirect_uris"] == ["https://sched.example/cb2"]
    row = db.session.execute(select(Client).where(Client.client_id == doc["client_id"])
                             ).scalar_one()
    db.session.refresh(row)
    assert row.client_name == "Scheduling v2"
    assert row.client_secret_hash == digest(doc["client_secret"])
    bad = client.put(path, json={**body, "redirect_uris": ["http://evil.example/cb"]},
                     headers=_auth(doc))
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_redirect_uri"
    other = client.put(path, json={**body, "client_id": "someone-else"}, headers=_auth(doc))
    assert other.status_code == 400
    wrong_secret = client.put(path, json={**body, "client_secret": "guess"}, headers=_auth(doc))
    assert wrong_secret.status_code == 400
    db.session.refresh(row)
    assert row.redirect_uris == ["https://sched.example/cb2"]


def test_rfc7592_delete(ctx, client):
    doc = _registered(client)
    path = f"/register/{doc['client_id']}"
    assert client.delete(path, headers=_auth(doc)).status_code == 204
    assert db.session.execute(select(Client)).first() is None
    assert client.get(path, headers=_auth(doc)).status_code == 401
    assert db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "client.deleted")).scalar_one().actor == f"client:{doc['client_id']}"


def test_rfc7592_needs_the_clients_own_token(ctx, client):
    first, second = _registered(client), _registered(client)
    path = f"/register/{first['client_id']}"
    for headers in ({}, _auth(first, "wrong"), _auth(second),
                    {"Authorization": f"Bearer {first['client_secret']}"}):
        for method in ("GET", "PUT", "DELETE"):
            response = client.open(path, method=method, headers=headers,
                                   json={**META, "client_id": first["client_id"]})
            assert response.status_code == 401, (method, headers)
            assert response.get_json()["error"] == "invalid_token"
    assert db.session.execute(select(Client)).scalars().all().__len__() == 2


def test_cli_issues_a_registration_token(app, env, monkeypatch):
    from click.testing import CliRunner

    from idp.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(main, ["clients", "issue-registration-token", "--json",
                                       "--uses", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["uses"] == 2 and len(data["initial_access_token"]) > 30
    with app.app_context():
        row = db.session.execute(select(InitialAccessToken)).scalar_one()
        assert row.token_hash == digest(data["initial_access_token"]) and row.uses_left == 2
        assert row.created_by == "cli"
    client = app.test_client()
    response = client.post("/register", json=META,
                           headers={"Authorization": f"Bearer {data['initial_access_token']}"})
    assert response.status_code == 201


@pytest.mark.parametrize("change", [{"client_name": "x\x00"}, {"scope": "openid\x00"},
                                    {"redirect_uris": ["https://sched.example/c\x00b"]},
                                    {"client_name": "a\nb"}])
def test_control_characters_are_refused(ctx, client, change):
    response = _register(client, _initial(), {**META, **change})
    assert response.status_code == 400
    assert response.get_json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
