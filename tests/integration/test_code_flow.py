"""The authorization code flow end to end over the Flask test client."""

from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import TEST_ISSUER
from tests.helpers import exchange, get_code, login, make_client, make_user


def _verify(http, token: str) -> dict:
    keys = KeySet.import_key_set(http.get("/jwks.json").get_json())
    return jwt.decode(token, keys, algorithms=["RS256", "ES256"]).claims


def test_code_flow_issues_verifiable_tokens(ctx, client):
    user = make_user()
    rp = make_client()
    assert login(client).status_code == 302
    code, verifier, params = get_code(client, rp)
    response = exchange(client, rp, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["refresh_token"]
    id_claims = _verify(client, body["id_token"])
    assert id_claims["iss"] == TEST_ISSUER
    assert id_claims["sub"] == user.subject != user.username
    assert id_claims["aud"] == [rp.client_id] and id_claims["azp"] == rp.client_id
    assert id_claims["nonce"] == params["nonce"]
    assert id_claims["acr"] == "urn:healthidp:acr:aal2"
    assert id_claims["amr"] == ["pwd", "otp", "mfa"]
    assert {"auth_time", "sid", "at_hash", "exp", "iat"} <= set(id_claims)
    assert id_claims["name"] == "Ana Smith" and id_claims["email"].startswith("drsmith@")
    at = _verify(client, body["access_token"])
    assert at["client_id"] == rp.client_id and at["sub"] == user.subject and at["jti"]
    assert at["exp"] - at["iat"] == 600
    userinfo = client.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert userinfo.status_code == 200
    assert userinfo.get_json()["sub"] == user.subject
