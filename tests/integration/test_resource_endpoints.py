"""userinfo, introspection and revocation."""

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.helpers import basic, exchange, get_code, login, make_client, make_user


@pytest.fixture
def issued(ctx, client):
    user = make_user()
    rp = make_client()
    login(client)
    code, verifier, _ = get_code(client, rp, scope="openid profile email offline_access")
    tokens = exchange(client, rp, code, verifier).get_json()
    return user, rp, tokens


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_userinfo_get_and_post(client, issued):
    user, _, tokens = issued
    got = client.get("/userinfo", headers=_bearer(tokens["access_token"]))
    posted = client.post("/userinfo", data={"access_token": tokens["access_token"]})
    assert got.get_json() == posted.get_json()
    body = got.get_json()
    assert body["sub"] == user.subject and body["email_verified"] is True
    assert "npi" not in body  # the npi scope was not granted
    assert got.headers["Cache-Control"] == "no-store"


def test_userinfo_without_token(client):
    response = client.get("/userinfo")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")


def test_userinfo_expired_token(client, issued, frozen):
    _, _, tokens = issued
    frozen.advance(601)
    response = client.get("/userinfo", headers=_bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_userinfo_tampered_token(client, issued):
    _, _, tokens = issued
    header, payload, signature = tokens["access_token"].split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    for bad in (f"{header}.{payload}.{flipped}", f"{header}.{payload[:-4]}abcd.{signature}"):
        response = client.get("/userinfo", headers=_bearer(bad))
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_userinfo_refuses_token_signed_by_another_key_and_id_tokens(client, issued):
    _, _, tokens = issued
    claims = jwt.decode(tokens["access_token"], _any_key_ok(client)).claims
    forged = jwt.encode({"alg": "RS256", "typ": "at+jwt"}, claims, RSAKey.generate_key(2048))
    assert client.get("/userinfo", headers=_bearer(forged)).status_code == 401
    # An ID token is not an access token (typ differs)
    assert client.get("/userinfo", headers=_bearer(tokens["id_token"])).status_code == 401


def _any_key_ok(client):
    from joserfc.jwk import KeySet

    return KeySet.import_key_set(client.get("/jwks.json").get_json())


def test_userinfo_with_revoked_token(client, issued):
    _, rp, tokens = issued
    revoke = client.post("/revoke", headers=basic(rp), data={"token": tokens["access_token"]})
    assert revoke.status_code == 200
    assert client.get("/userinfo", headers=_bearer(tokens["access_token"])).status_code == 401


def test_introspection_by_owner_and_after_revocation(client, issued):
    user, rp, tokens = issued
    body = client.post("/introspect", headers=basic(rp),
                       data={"token": tokens["access_token"]}).get_json()
    assert body["active"] is True and body["sub"] == user.subject
    assert body["client_id"] == rp.client_id and body["username"] == "drsmith"
    refresh = client.post("/introspect", headers=basic(rp), data={
        "token": tokens["refresh_token"], "token_type_hint": "refresh_token"}).get_json()
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    client.post("/revoke", headers=basic(rp), data={"token": tokens["refresh_token"]})
    for token in (tokens["refresh_token"], tokens["access_token"]):
        after = client.post("/introspect", headers=basic(rp), data={"token": token}).get_json()
        assert after == {"active": False}


def test_introspection_requires_client_authentication(client, issued):
    _, rp, tokens = issued
    anonymous = client.post("/introspect", data={"token": tokens["access_token"]})
    assert anonymous.status_code == 401 and anonymous.get_json()["error"] == "invalid_client"
    public = make_client(public=True, name="Public")
    as_public = client.post("/introspect", data={"token": tokens["access_token"],
                                                 "client_id": public.client_id})
    assert as_public.status_code == 401


def test_introspection_by_another_client_sees_nothing(client, issued):
    _, _, tokens = issued
    other = make_client(name="Other")
    body = client.post("/introspect", headers=basic(other),
                       data={"token": tokens["access_token"]}).get_json()
    assert body == {"active": False}
    resource = make_client(name="Resource server", introspect_any=True)
    body = client.post("/introspect", headers=basic(resource),
                       data={"token": tokens["access_token"]}).get_json()
    assert body["active"] is True


def test_revocation_by_another_client_changes_nothing(client, issued):
    _, _, tokens = issued
    other = make_client(name="Other")
    response = client.post("/revoke", headers=basic(other), data={"token": tokens["access_token"]})
    assert response.status_code == 200
    assert client.get("/userinfo", headers=_bearer(tokens["access_token"])).status_code == 200


def test_revocation_of_unknown_token_is_200_and_bad_hint_is_refused(client, issued):
    _, rp, _ = issued
    assert client.post("/revoke", headers=basic(rp), data={"token": "nope"}).status_code == 200
    bad = client.post("/revoke", headers=basic(rp), data={"token": "x", "token_type_hint": "id"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "unsupported_token_type"


def test_expired_token_introspects_inactive(client, issued, frozen):
    _, rp, tokens = issued
    frozen.advance(601)
    body = client.post("/introspect", headers=basic(rp),
                       data={"token": tokens["access_token"]}).get_json()
    assert body == {"active": False}
