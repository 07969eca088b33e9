"""The FAPI 2.0 Security Profile as a client profile (policies/fapi.toml [profiles.fapi2]): a
client registered with it is held to all of it: PAR, PKCE S256, private_key_jwt, DPoP, `iss`
in authorization responses (RFC 9207) and codes of at most 60 seconds."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from idp.admin import service as admin_service
from idp.context import runtime
from idp.extensions import db
from idp.oidc.clients import ClientError, update_client
from idp.oidc.models import AccessTokenRecord, AuthorizationCode, Client
from tests.fapi_support import (
    ISSUER,
    authorization_params,
    client_auth,
    dpop_proof,
    make_keyed_client,
    new_key,
)
from tests.helpers import exchange as code_exchange
from tests.helpers import get_code, login, make_client, make_user, query

TOKEN_URL = f"{ISSUER}/token"


@pytest.fixture
def signed_in(ctx, client):
    make_user()
    assert login(client).status_code == 302
    return client


def fapi_client(**kwargs):
    return make_keyed_client(profile="fapi2", first_party=True, **kwargs)


def pushed_code(http, rp, **extra):
    params, verifier = authorization_params(rp, **extra)
    pushed = http.post("/par", data={**params, **client_auth(rp)})
    assert pushed.status_code == 201, pushed.text
    response = http.get("/authorize?" + urlencode(
        {"client_id": rp.client_id, "request_uri": pushed.get_json()["request_uri"]}))
    assert response.status_code == 302, response.text
    return query(response.headers["Location"]), verifier


def exchange(http, rp, code, verifier, key=None, later=0):
    """The code exchange; `later`: seconds the IdP's clock was moved (the proof's iat too)."""
    headers = {"DPoP": dpop_proof(key, "POST", TOKEN_URL, iat_offset=later)} if key else {}
    return http.post("/token", headers=headers, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
        "code_verifier": verifier, **client_auth(rp)})


def test_registration_sets_what_the_profile_requires(ctx):
    rp = fapi_client()
    row = db.session.execute(select(Client).where(Client.client_id == rp.client_id)).scalar_one()
    assert row.profile == "fapi2" and row.require_pushed_authorization_requests
    assert row.dpop_bound_access_tokens and row.require_pkce
    assert row.token_endpoint_auth_method == "private_key_jwt"


@pytest.mark.parametrize("kwargs,message", [
    ({}, "private_key_jwt"),                        # client_secret_basic
    ({"public": True}, "confidential"),
    ({"profile": "no-such-profile"}, "profile: one of"),
])
def test_a_client_outside_the_profile_is_not_registered(ctx, kwargs, message):
    kwargs = {"profile": "fapi2", **kwargs}
    with pytest.raises(ClientError, match=message):
        make_client(**kwargs)
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(Client)) == 0


def test_a_fapi_client_cannot_be_moved_to_a_secret(ctx):
    rp = fapi_client()
    row = db.session.execute(select(Client).where(Client.client_id == rp.client_id)).scalar_one()
    with pytest.raises(ClientError, match="private_key_jwt"):
        update_client(row, name="x", redirect_uris=list(row.redirect_uris), grant_types=None,
                      scope=row.scope, post_logout_redirect_uris=[],
                      backchannel_logout_uri=None, auth_method="client_secret_basic",
                      first_party=True, require_pkce=True)


def test_the_fapi2_flow_end_to_end(signed_in):
    rp = fapi_client()
    got, verifier = pushed_code(signed_in, rp)
    assert got["iss"] == ISSUER and got["code"]
    key = new_key()
    answer = exchange(signed_in, rp, got["code"], verifier, key)
    assert answer.status_code == 200, answer.text
    body = answer.get_json()
    assert body["token_type"] == "DPoP"
    userinfo = signed_in.get("/userinfo", headers={
        "Authorization": f"DPoP {body['access_token']}",
        "DPoP": dpop_proof(key, "GET", f"{ISSUER}/userinfo",
                           access_token=body["access_token"])})
    assert userinfo.status_code == 200


def test_a_fapi_client_must_push(signed_in):
    rp = fapi_client()
    params, _ = authorization_params(rp)
    response = signed_in.get("/authorize?" + urlencode(params))
    assert response.status_code == 400 and "Location" not in response.headers
    assert db.session.scalar(select(func.count()).select_from(AuthorizationCode)) == 0


def test_a_fapi_client_must_use_pkce_s256(signed_in):
    rp = fapi_client()
    params, _ = authorization_params(rp, code_challenge=None, code_challenge_method=None)
    response = signed_in.post("/par", data={**params, **client_auth(rp)})
    assert response.status_code == 400 and "PKCE" in response.get_json()["error_description"]


def test_a_fapi_client_gets_no_bearer_token(signed_in):
    rp = fapi_client()
    got, verifier = pushed_code(signed_in, rp)
    refused = exchange(signed_in, rp, got["code"], verifier)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_dpop_proof"
    assert db.session.scalar(select(func.count()).select_from(AccessTokenRecord)) == 0
    assert exchange(signed_in, rp, got["code"], verifier, new_key()).status_code == 200


def test_a_fapi_clients_codes_live_at_most_60_seconds(signed_in, monkeypatch, frozen):
    rt = runtime()
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, tokens=dataclasses.replace(
        rt.policy.tokens, authorization_code_lifetime=600)))
    rp, other = fapi_client(), make_client()
    got, verifier = pushed_code(signed_in, rp)
    other_code, other_verifier, _ = get_code(signed_in, other)
    frozen.advance(61)
    late = exchange(signed_in, rp, got["code"], verifier, new_key(), later=61)
    assert late.status_code == 400 and late.get_json()["error"] == "invalid_grant"
    assert code_exchange(signed_in, other, other_code, other_verifier).status_code == 200


def test_dynamic_registration_with_the_profile(ctx, client):
    key = new_key()
    token = admin_service.issue_initial_token(actor="test", lifetime=3600, uses=2).token
    db.session.commit()
    body = {"client_name": "FAPI app", "redirect_uris": ["https://fapi.example/cb"],
            "grant_types": ["authorization_code"], "response_types": ["code"],
            "scope": "openid", "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [{**key.as_dict(private=False), "kid": "k1"}]},
            "client_profile": "fapi2"}
    created = client.post("/register", json=body, headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201, created.text
    doc = created.get_json()
    assert doc["client_profile"] == "fapi2"
    assert doc["require_pushed_authorization_requests"] is True
    assert doc["dpop_bound_access_tokens"] is True
    refused = client.post("/register", json={**body, "token_endpoint_auth_method":
                                             "client_secret_basic", "jwks": None},
                          headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_client_metadata"


def test_the_cli_registers_and_updates_the_profile(ctx, env, tmp_path):
    key = new_key()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**key.as_dict(private=False), "kid": "k1"}]}))
    idp = str(Path(sys.executable).parent / "idp")

    def run(*args):
        return subprocess.run([idp, *args], env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=60)
    made = run("clients", "create", "--name", "FAPI", "--redirect-uri", "https://f.example/cb",
               "--jwks-file", str(jwks), "--profile", "fapi2", "--json")
    assert made.returncode == 0, made.stderr
    client_id = json.loads(made.stdout)["client_id"]
    refused = run("clients", "create", "--name", "Bad", "--redirect-uri", "https://b.example/cb",
                  "--profile", "fapi2")
    assert refused.returncode == 2 and "private_key_jwt" in refused.stderr
    plain = run("clients", "create", "--name", "Plain", "--redirect-uri", "https://p.example/cb",
                "--json")
    plain_id = json.loads(plain.stdout)["client_id"]
    assert run("clients", "update", plain_id, "--profile", "fapi2").returncode == 2
    changed = run("clients", "update", plain_id, "--require-par", "--dpop", "--json")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["dpop_bound_access_tokens"] is True
    db.session.expire_all()
    rows = {c.client_id: c for c in db.session.execute(select(Client)).scalars()}
    assert rows[client_id].profile == "fapi2" and rows[client_id].dpop_bound_access_tokens
    assert rows[plain_id].profile is None and rows[plain_id].require_pushed_authorization_requests


def test_fapi_algorithms_only(signed_in):
    """FAPI 2.0 §5.4: ES256/PS256 for assertions and request objects; ID tokens in ES256."""
    import secrets
    import time

    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from tests.fapi_support import ASSERTION_TYPE, KeyedRp, request_object

    ec, rsa = new_key(), RSAKey.generate_key(2048, private=True)
    jwks = {"keys": [{**ec.as_dict(private=False), "kid": "k1"},
                     {**rsa.as_dict(private=False), "kid": "r1"}]}
    made = make_client(auth_method="private_key_jwt", jwks=jwks, profile="fapi2")
    rp = KeyedRp(made.client_id, None, made.redirect_uri, key=ec)
    row = db.session.execute(select(Client).where(Client.client_id == rp.client_id)).scalar_one()
    assert row.id_token_signed_response_alg == "ES256"
    now = int(time.time())
    rs256 = jwt.encode({"alg": "RS256", "kid": "r1"}, {
        "iss": rp.client_id, "sub": rp.client_id, "aud": ISSUER, "iat": now, "exp": now + 60,
        "jti": secrets.token_urlsafe(8)}, rsa)
    params, _ = authorization_params(rp)
    refused = signed_in.post("/par", data={**params, "client_assertion_type": ASSERTION_TYPE,
                                           "client_assertion": rs256})
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_client"
    rs256_object = request_object(KeyedRp(rp.client_id, None, rp.redirect_uri, key=rsa,
                                          kid="r1"), params, alg="RS256")
    refused = signed_in.post("/par", data={"client_id": rp.client_id, "request": rs256_object,
                                           **client_auth(rp)})
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_request_object"
    es256_object = request_object(rp, params)
    assert signed_in.post("/par", data={"client_id": rp.client_id, "request": es256_object,
                                        **client_auth(rp)}).status_code == 201
    with pytest.raises(ClientError, match="id-token-alg"):
        make_keyed_client(profile="fapi2", id_token_alg="RS256")
