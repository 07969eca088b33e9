"""Key rotation: new keys are published before they sign; old keys outlive their tokens."""

from joserfc import jws

from idp.context import keystore, policy
from tests.helpers import exchange, get_code, login, make_client, make_user


def _kid(token: str) -> str:
    return jws.extract_compact(token.encode()).headers()["kid"]


def _published(client) -> set[str]:
    return {k["kid"] for k in client.get("/jwks.json").get_json()["keys"]}


def _issue(client, rp) -> dict:
    code, verifier, _ = get_code(client, rp)
    return exchange(client, rp, code, verifier).get_json()


def test_rotation_keeps_old_tokens_valid_until_they_expire(ctx, client, frozen):
    make_user()
    rp = make_client()
    login(client)
    before = _issue(client, rp)
    old_kid = _kid(before["access_token"])
    assert _kid(before["id_token"]) == old_kid  # both RS256 by default

    new_kid = keystore().rotate(0, ("RS256",))[0]
    assert {old_kid, new_kid} <= _published(client)
    bearer = {"Authorization": f"Bearer {before['access_token']}"}
    assert client.get("/userinfo", headers=bearer).status_code == 200  # old token still verifies
    after = _issue(client, rp)
    assert _kid(after["access_token"]) == new_kid

    lifetime = policy().max_token_lifetime
    frozen.advance(lifetime - 5)
    assert old_kid in _published(client)  # an ID token it signed may still be alive
    frozen.advance(10)
    assert old_kid not in _published(client)
    assert new_kid in _published(client)
    states = {s.kid: s.state for s in keystore().statuses()}
    assert states[old_kid] == "expired" and states[new_kid] == "active"


def test_rotated_key_is_published_at_once_but_signs_after_the_delay(ctx, client, frozen):
    make_user()
    rp = make_client()
    login(client)
    current = keystore().signing_key("RS256").kid
    pending = keystore().rotate(3600, ("RS256",))[0]
    assert pending in _published(client)
    assert _kid(_issue(client, rp)["access_token"]) == current
    frozen.advance(3601)
    login(client)  # the SSO session idled out while time moved
    assert _kid(_issue(client, rp)["access_token"]) == pending


def test_jwks_has_only_public_members(ctx, client):
    for key in client.get("/jwks.json").get_json()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
        assert key["kid"] and key["alg"] in ("RS256", "ES256") and key["use"] == "sig"
