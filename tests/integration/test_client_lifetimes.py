"""Per-client token lifetimes: a client's own access, ID and refresh token lifetimes are used at
issuance (expires_in, JWT exp, refresh token expiry); empty means the policy default; values
outside [client_min_lifetime, max_*_lifetime] of tokens.toml are refused with a readable
message in the admin form, the service and the CLI."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from idp import clock
from idp.context import policy
from idp.extensions import db
from idp.oidc.clients import ClientError, Lifetimes, create_client
from idp.oidc.models import Client, RefreshToken
from tests.helpers import csrf_from, exchange, get_code, login, make_client, make_user

IDP = str(Path(sys.executable).parent / "idp")


def _claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _tokens(http, rp) -> dict:
    code, verifier, _ = get_code(http, rp)
    response = exchange(http, rp, code, verifier)
    assert response.status_code == 200, response.text
    return response.get_json()


def test_a_five_minute_access_token(ctx, client):
    make_user()
    rp = make_client(lifetimes=Lifetimes(access_token=300, id_token=120,
                                         refresh_token=86400))
    assert login(client).status_code == 302
    before = clock.now()
    body = _tokens(client, rp)
    assert body["expires_in"] == 300
    access = _claims(body["access_token"])
    assert access["exp"] - access["iat"] == 300
    id_token = _claims(body["id_token"])
    assert id_token["exp"] - id_token["iat"] == 120
    row = db.session.execute(select(RefreshToken)).scalar_one()
    assert abs((clock.aware(row.expires_at) - before) - timedelta(seconds=86400)) \
        < timedelta(seconds=5)


def test_empty_lifetimes_use_the_policy_defaults(ctx, client):
    make_user()
    rp = make_client()
    login(client)
    body = _tokens(client, rp)
    rules = policy().tokens
    assert body["expires_in"] == rules.access_token_lifetime
    assert _claims(body["access_token"])["exp"] - _claims(body["access_token"])["iat"] == \
        rules.access_token_lifetime
    id_token = _claims(body["id_token"])
    assert id_token["exp"] - id_token["iat"] == rules.id_token_lifetime


def test_client_credentials_use_the_clients_lifetime(ctx, client):
    rp = make_client(grant_types=["client_credentials"], redirect_uri="https://svc.example/cb",
                     scope="system/Patient.rs", lifetimes=Lifetimes(access_token=90))
    import base64 as b64

    auth = b64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()
    response = client.post("/token", headers={"Authorization": f"Basic {auth}"},
                           data={"grant_type": "client_credentials",
                                 "scope": "system/Patient.rs"})
    assert response.status_code == 200 and response.get_json()["expires_in"] == 90
    claims = _claims(response.get_json()["access_token"])
    assert claims["exp"] - claims["iat"] == 90


@pytest.mark.parametrize("lifetimes", [
    Lifetimes(access_token=59), Lifetimes(access_token=3601), Lifetimes(id_token=86401),
    Lifetimes(refresh_token=7776001), Lifetimes(access_token=0),
])
def test_out_of_bounds_values_are_refused_by_the_service(ctx, lifetimes):
    with pytest.raises(ClientError, match="lifetime: between 60 and"):
        create_client(name="X", redirect_uris=["https://x.example/cb"], lifetimes=lifetimes)
    db.session.rollback()
    assert db.session.execute(select(Client)).first() is None


def _admin(http):
    make_user("root.admin", npi=None, role="admin")
    assert login(http, "root.admin").status_code == 302


def _form(token: str, **over) -> dict:
    data = {"csrf_token": token, "client_name": "Radiology viewer",
            "redirect_uris": "https://rad.example/cb",
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "openid profile email", "token_endpoint_auth_method": "client_secret_basic",
            "require_pkce": "y"}
    data.update(over)
    return data


def test_admin_form_sets_and_clears_lifetimes(ctx, client):
    _admin(client)
    page = client.get("/admin/clients/new")
    assert 'name="access_token_lifetime"' in page.text and "default 600 s" in page.text
    token = csrf_from(page.text)
    done = client.post("/admin/clients/new", data=_form(
        token, access_token_lifetime="300", id_token_lifetime="", refresh_token_lifetime=""))
    assert done.status_code == 200
    row = db.session.execute(select(Client)).scalar_one()
    assert (row.access_token_lifetime, row.id_token_lifetime, row.refresh_token_lifetime) == \
        (300, None, None)
    edit = client.get(f"/admin/clients/{row.client_id}")
    assert 'value="300"' in edit.text
    saved = client.post(f"/admin/clients/{row.client_id}", data=_form(
        token, access_token_lifetime="", id_token_lifetime="900"))
    assert saved.status_code == 302
    db.session.refresh(row)
    assert (row.access_token_lifetime, row.id_token_lifetime) == (None, 900)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("access_token_lifetime", "3601", "access-token-lifetime: between 60 and 3600 seconds"),
    ("access_token_lifetime", "30", "access-token-lifetime: between 60 and 3600 seconds"),
    ("id_token_lifetime", "100000", "id-token-lifetime: between 60 and 86400 seconds"),
    ("refresh_token_lifetime", "-5", "refresh-token-lifetime: between 60 and 7776000"),
])
def test_admin_form_refuses_out_of_bounds_values(ctx, client, field, value, message):
    _admin(client)
    token = csrf_from(client.get("/admin/clients/new").text)
    page = client.post("/admin/clients/new", data=_form(token, **{field: value}))
    assert page.status_code == 400 and message in page.text, page.text
    assert db.session.execute(select(Client)).first() is None
    rp = make_client()
    page = client.post(f"/admin/clients/{rp.client_id}", data=_form(token, **{field: value}))
    assert page.status_code == 400 and message in page.text
    row = db.session.execute(select(Client)).scalar_one()
    db.session.refresh(row)
    assert row.access_token_lifetime is None and row.id_token_lifetime is None


def test_admin_form_refuses_a_non_number(ctx, client):
    _admin(client)
    token = csrf_from(client.get("/admin/clients/new").text)
    page = client.post("/admin/clients/new", data=_form(token, access_token_lifetime="soon"))
    assert page.status_code == 400 and "Not a valid integer value" in page.text


def test_a_lifetime_change_reaches_the_token_endpoint_at_once(ctx, client):
    """The client cache is invalidated by the admin's change: the next token uses it."""
    make_user()
    rp = make_client()
    login(client)
    assert _tokens(client, rp)["expires_in"] == policy().tokens.access_token_lifetime
    admin = ctx.test_client()
    _admin(admin)
    token = csrf_from(admin.get(f"/admin/clients/{rp.client_id}").text)
    saved = admin.post(f"/admin/clients/{rp.client_id}", data=_form(
        token, redirect_uris=rp.redirect_uri, access_token_lifetime="300",
        client_name="Test RP", scope="openid profile email offline_access roles npi",
        first_party="y"))
    assert saved.status_code == 302
    assert _tokens(client, rp)["expires_in"] == 300


def test_cli_options(env, app, ctx):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([IDP, "clients", "create", "--name", "Svc", "--redirect-uri",
                               "https://svc.example/cb", *args], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=60)

    done = run("--access-token-lifetime", "300", "--refresh-token-lifetime", "3600", "--json")
    assert done.returncode == 0, done.stderr
    row = db.session.execute(select(Client).where(
        Client.client_id == json.loads(done.stdout)["client_id"])).scalar_one()
    assert (row.access_token_lifetime, row.id_token_lifetime, row.refresh_token_lifetime) == \
        (300, None, 3600)
    refused = run("--access-token-lifetime", "7200")
    assert refused.returncode == 2
    assert "access-token-lifetime: between 60 and 3600 seconds" in refused.stderr
