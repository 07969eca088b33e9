"""Token endpoint: PKCE, code replay, redirect_uri binding, client auth, refresh rotation."""

import pytest

from tests.helpers import basic, csrf_from, exchange, get_code, login, make_client, make_user, pkce


@pytest.fixture
def rp_and_code(ctx, client):
    make_user()
    rp = make_client()
    assert login(client).status_code == 302
    code, verifier, _ = get_code(client, rp)
    return rp, code, verifier


def _error(response) -> str:
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()["error"]


def test_wrong_pkce_verifier_is_invalid_grant(client, rp_and_code):
    rp, code, _ = rp_and_code
    response = exchange(client, rp, code, pkce()[0])
    assert response.status_code == 400 and _error(response) == "invalid_grant"


def test_missing_pkce_verifier_is_refused(client, rp_and_code):
    rp, code, _ = rp_and_code
    response = exchange(client, rp, code, None)
    assert response.status_code == 400 and _error(response) == "invalid_request"


def test_verifier_without_challenge_is_refused(ctx, client):
    make_user()
    rp = make_client()
    login(client)
    from tests.helpers import authorize, query

    response, _ = authorize(client, rp, None)
    code = query(response.headers["Location"])["code"]
    refused = exchange(client, rp, code, pkce()[0])
    assert refused.status_code == 400 and _error(refused) == "invalid_request"


def test_replayed_code_is_refused_and_revokes_what_it_issued(client, rp_and_code):
    rp, code, verifier = rp_and_code
    first = exchange(client, rp, code, verifier)
    assert first.status_code == 200
    tokens = first.get_json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/userinfo", headers=bearer).status_code == 200
    replay = exchange(client, rp, code, verifier)
    assert replay.status_code == 400 and _error(replay) == "invalid_grant"
    revoked = client.get("/userinfo", headers=bearer)
    assert revoked.status_code == 401
    assert 'error="invalid_token"' in revoked.headers["WWW-Authenticate"]
    refresh = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 400 and _error(refresh) == "invalid_grant"


def test_wrong_redirect_uri_at_token_is_invalid_grant(client, rp_and_code):
    rp, code, verifier = rp_and_code
    response = exchange(client, rp, code, verifier, redirect_uri="https://rp.example/other")
    assert response.status_code == 400 and _error(response) == "invalid_grant"


def test_wrong_client_secret_is_401_invalid_client(client, rp_and_code):
    rp, code, verifier = rp_and_code
    rp.client_secret = "not-the-secret"
    response = exchange(client, rp, code, verifier)
    assert response.status_code == 401 and _error(response) == "invalid_client"
    assert response.headers.get("WWW-Authenticate", "").startswith("Basic")


def test_code_of_another_client_is_invalid_grant(ctx, client, rp_and_code):
    rp, code, verifier = rp_and_code
    other = make_client(name="Other")
    other.redirect_uri = rp.redirect_uri
    response = exchange(client, other, code, verifier)
    assert response.status_code == 400 and _error(response) == "invalid_grant"


def test_code_expires_after_60_seconds(client, rp_and_code, frozen):
    rp, code, verifier = rp_and_code
    frozen.advance(61)
    response = exchange(client, rp, code, verifier)
    assert response.status_code == 400 and _error(response) == "invalid_grant"


def test_client_secret_post_only_for_clients_registered_with_it(ctx, client):
    make_user()
    rp = make_client(auth_method="client_secret_post")
    login(client)
    code, verifier, _ = get_code(client, rp)
    basic_auth = exchange(client, rp, code, verifier)
    assert basic_auth.status_code == 401
    code, verifier, _ = get_code(client, rp)
    post = client.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
        "code_verifier": verifier, "client_id": rp.client_id, "client_secret": rp.client_secret})
    assert post.status_code == 200, post.text


def test_public_client_exchanges_with_pkce_only(ctx, client):
    make_user()
    rp = make_client(public=True)
    login(client)
    code, verifier, _ = get_code(client, rp)
    response = exchange(client, rp, code, verifier)
    assert response.status_code == 200, response.text


def test_unsupported_grant_type(ctx, client):
    rp = make_client()
    response = client.post("/token", headers=basic(rp), data={"grant_type": "password",
                                                                "username": "x", "password": "y"})
    assert response.status_code == 400 and _error(response) == "unsupported_grant_type"


def test_refresh_rotates_and_reuse_revokes_the_family(client, rp_and_code):
    rp, code, verifier = rp_and_code
    tokens = exchange(client, rp, code, verifier).get_json()
    first_refresh = tokens["refresh_token"]
    rotated = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": first_refresh})
    assert rotated.status_code == 200, rotated.text
    new = rotated.get_json()
    assert new["refresh_token"] != first_refresh
    bearer = {"Authorization": f"Bearer {new['access_token']}"}
    assert client.get("/userinfo", headers=bearer).status_code == 200
    reuse = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": first_refresh})
    assert reuse.status_code == 400 and _error(reuse) == "invalid_grant"
    # the whole family is gone: the newest refresh token and its access token too
    after = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": new["refresh_token"]})
    assert after.status_code == 400
    assert client.get("/userinfo", headers=bearer).status_code == 401


def test_refresh_cannot_widen_scope(client, rp_and_code):
    rp, code, verifier = rp_and_code
    tokens = exchange(client, rp, code, verifier).get_json()
    response = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "scope": "openid profile email offline_access roles"})
    assert response.status_code == 400 and _error(response) == "invalid_scope"
    # The refused request changed nothing: the claim of the token commits only with the new
    # tokens, so the same refresh token still works (and is not taken for a reuse).
    again = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert again.status_code == 200, again.text
    assert client.get("/userinfo", headers={
        "Authorization": f"Bearer {again.get_json()['access_token']}"}).status_code == 200


def test_no_refresh_token_for_a_client_not_registered_for_the_grant(ctx, client):
    """Without offline_access a client registered for refresh_token gets a session-bound
    token (tests/integration/test_session_bound_refresh.py); one not registered gets none."""
    make_user()
    rp = make_client(grant_types=["authorization_code"])
    login(client)
    code, verifier, _ = get_code(client, rp, scope="openid profile offline_access")
    body = exchange(client, rp, code, verifier).get_json()
    assert "refresh_token" not in body and body["access_token"]


def test_refresh_token_of_another_client_is_refused(ctx, client, rp_and_code):
    rp, code, verifier = rp_and_code
    tokens = exchange(client, rp, code, verifier).get_json()
    thief = make_client(name="Thief")
    response = client.post("/token", headers=basic(thief), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert response.status_code == 400
    # the thief's attempt did not consume the owner's token
    owner = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert owner.status_code == 200


def test_client_credentials_for_service_clients(ctx, client):
    service = make_client(grant_types=["client_credentials"], redirect_uri="https://svc.example/cb",
                          scope="system/Patient.rs")
    response = client.post("/token", headers=basic(service), data={
        "grant_type": "client_credentials", "scope": "system/Patient.rs"})
    assert response.status_code == 200, response.text
    body = response.get_json()
    assert "refresh_token" not in body and "id_token" not in body
    from joserfc import jwt

    claims = jwt.decode(body["access_token"], _keys(client)).claims
    assert claims["sub"] == service.client_id and claims["aud"] == "http://127.0.0.1:8002"


@pytest.mark.parametrize("asked", ["system/Patient.rs system/Observation.rs", "roles",
                                   "system/Patient.cruds", "openid offline_access"])
def test_client_credentials_refuses_scopes_the_service_is_not_registered_for(ctx, client,
                                                                             asked):
    """A service once got any scope it asked for, SMART system/ scopes included (the EHR's
    FHIR API serves every patient to such a token): now invalid_scope, and nothing issued."""
    from idp.oidc.models import AccessTokenRecord

    service = make_client(grant_types=["client_credentials"], redirect_uri="https://svc.example/cb",
                          scope="system/Patient.rs")
    before = AccessTokenRecord.query.count()
    response = client.post("/token", headers=basic(service), data={
        "grant_type": "client_credentials", "scope": asked})
    assert response.status_code == 400 and _error(response) == "invalid_scope"
    assert "not registered for this client" in response.get_json()["error_description"]
    assert AccessTokenRecord.query.count() == before
    granted = client.post("/token", headers=basic(service), data={
        "grant_type": "client_credentials", "scope": "system/Patient.rs"})
    assert granted.status_code == 200 and granted.get_json()["scope"] == "system/Patient.rs"


def _keys(client):
    from joserfc.jwk import KeySet

    return KeySet.import_key_set(client.get("/jwks.json").get_json())


def test_client_credentials_refused_for_clients_without_the_grant(ctx, client):
    rp = make_client()
    response = client.post("/token", headers=basic(rp), data={"grant_type": "client_credentials"})
    assert response.status_code == 400 and _error(response) == "unauthorized_client"


def test_code_from_a_session_that_logged_out_cannot_be_exchanged(ctx, client, rp_and_code):
    rp, code, verifier = rp_and_code
    page = client.get("/logout")
    client.post("/logout", data={"confirm": "yes", "csrf_token": csrf_from(page.text)})
    response = exchange(client, rp, code, verifier)
    assert response.status_code == 400 and _error(response) == "invalid_grant"
