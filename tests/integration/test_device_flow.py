"""Device authorization grant (RFC 8628): a shared device gets a user code, a signed-in
person enters it at /device and allows (or denies) it, the device polls /token. Attacks:
guessing user codes (throttled, readable refusal, nothing changes), polling too fast
(slow_down, interval grown), a code used twice, expired, another client's device_code."""

from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.context import policy
from idp.policy import DEVICE_CODE_GRANT
from tests.helpers import basic, csrf_from, login, make_client, make_user

SCOPE = "openid profile email"


@pytest.fixture
def cart(ctx):
    """A shared clinical cart: a public client registered for the device grant."""
    return make_client(scope=SCOPE, public=True, grant_types=[DEVICE_CODE_GRANT])


def _codes(client, rp, scope: str = SCOPE):
    response = client.post("/device_authorization", data={"client_id": rp.client_id,
                                                           "scope": scope})
    return response


def _poll(client, rp, device_code: str):
    return client.post("/token", data={"grant_type": DEVICE_CODE_GRANT,
                                       "device_code": device_code, "client_id": rp.client_id})


def _error(response) -> str:
    assert response.status_code in (400, 401), (response.status_code, response.text)
    return response.get_json()["error"]


def _enter(client, user_code: str, decision: str | None = None):
    page = client.get("/device")
    assert page.status_code == 200, page.headers.get("Location")
    data = {"user_code": user_code, "csrf_token": csrf_from(page.text)}
    if decision:
        confirm = client.post("/device", data=data)
        assert confirm.status_code == 200 and 'value="allow"' in confirm.text, confirm.text
        data = {"user_code": user_code, "csrf_token": csrf_from(confirm.text),
                "decision": decision}
    return client.post("/device", data=data)


def test_device_signs_in_through_a_person(cart, client, frozen):
    codes = _codes(client, cart)
    assert codes.status_code == 200, codes.text
    body = codes.get_json()
    assert codes.headers["Cache-Control"] == "no-store"
    assert body["verification_uri"].endswith("/device") and body["interval"] == 5
    assert body["verification_uri_complete"].endswith(f"?user_code={body['user_code']}")
    assert _error(_poll(client, cart, body["device_code"])) == "authorization_pending"

    make_user()
    login(client)
    confirm_page = client.get("/device", query_string={"user_code": body["user_code"]})
    assert body["user_code"] in confirm_page.text  # prefilled from verification_uri_complete
    done = _enter(client, body["user_code"].lower(), "allow")  # any case, as typed
    assert done.status_code == 200 and "Device connected" in done.text

    frozen.advance(body["interval"])
    tokens = _poll(client, cart, body["device_code"])
    assert tokens.status_code == 200, tokens.text
    got = tokens.get_json()
    assert got["scope"] == SCOPE and "refresh_token" not in got
    keys = KeySet.import_key_set(client.get("/jwks.json").get_json())
    claims = jwt.decode(got["id_token"], keys).claims
    assert claims["aud"] == [cart.client_id] and "nonce" not in claims and claims["amr"]
    assert client.get("/userinfo", headers={
        "Authorization": f"Bearer {got['access_token']}"}).status_code == 200

    frozen.advance(body["interval"])
    assert _error(_poll(client, cart, body["device_code"])) == "invalid_grant"  # once only


def test_polling_too_fast_is_told_to_slow_down(cart, client, frozen):
    body = _codes(client, cart).get_json()
    assert _error(_poll(client, cart, body["device_code"])) == "authorization_pending"
    assert _error(_poll(client, cart, body["device_code"])) == "slow_down"
    # the interval grew by 5 s: waiting the old interval is still too fast
    frozen.advance(body["interval"] + 1)
    assert _error(_poll(client, cart, body["device_code"])) == "slow_down"
    frozen.advance(body["interval"] + policy().device.slow_down_step * 2 + 1)
    assert _error(_poll(client, cart, body["device_code"])) == "authorization_pending"


def test_denied(cart, client, frozen):
    body = _codes(client, cart).get_json()
    make_user()
    login(client)
    assert "Device refused" in _enter(client, body["user_code"], "deny").text
    frozen.advance(body["interval"])
    assert _error(_poll(client, cart, body["device_code"])) == "access_denied"


def test_expired(cart, client, frozen):
    body = _codes(client, cart).get_json()
    frozen.advance(policy().device.expires_in + 1)
    assert _error(_poll(client, cart, body["device_code"])) == "expired_token"
    make_user()
    login(client)
    refused = _enter(client, body["user_code"])
    assert refused.status_code == 400 and "not right, or it has expired" in refused.text


def test_guessing_user_codes_is_refused_and_throttled(cart, client, frozen):
    body = _codes(client, cart).get_json()
    make_user()
    login(client)
    for guess in ("BCDF-GHJK", "not a code", "x" * 500, "\x00"):
        refused = _enter(client, guess)
        assert refused.status_code == 400 and 'role="alert"' in refused.text
    limit = int(policy().device.user_code_limit.split()[0])
    statuses = [_enter(client, "ZZZZ-ZZZZ").status_code for _ in range(limit)]
    assert 429 in statuses
    # the guesses changed nothing: the real code still waits for its person
    frozen.advance(body["interval"])
    assert _error(_poll(client, cart, body["device_code"])) == "authorization_pending"


def test_device_page_needs_a_sign_in(cart, client):
    response = client.get("/device?user_code=BCDF-GHJK")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_another_clients_device_code_is_refused(cart, client):
    body = _codes(client, cart).get_json()
    other = make_client(scope=SCOPE, public=True, grant_types=[DEVICE_CODE_GRANT],
                        name="Other cart")
    assert _error(_poll(client, other, body["device_code"])) == "unauthorized_client"
    assert _error(_poll(client, cart, "forged-device-code")) == "invalid_request"


def test_only_clients_registered_for_the_grant(ctx, client):
    web = make_client(scope=SCOPE)
    response = client.post("/device_authorization", headers=basic(web), data={"scope": SCOPE})
    assert _error(response) == "unauthorized_client"


def test_unregistered_scope_is_refused(cart, client):
    assert _error(_codes(client, cart, scope="openid roles")) == "invalid_scope"


def test_offline_access_gives_an_offline_refresh_token(ctx, client, frozen):
    cart = make_client(scope=f"{SCOPE} offline_access", public=True,
                       grant_types=[DEVICE_CODE_GRANT, "refresh_token"])
    body = _codes(client, cart, scope=f"{SCOPE} offline_access").get_json()
    make_user()
    login(client)
    _enter(client, body["user_code"], "allow")
    frozen.advance(body["interval"])
    got = _poll(client, cart, body["device_code"]).get_json()
    assert got["refresh_token"]
    again = client.post("/token", data={"grant_type": "refresh_token", "client_id":
                                        cart.client_id, "refresh_token": got["refresh_token"]})
    assert again.status_code == 200, again.text


def test_discovery_advertises_the_device_grant(ctx, client):
    meta = client.get("/.well-known/openid-configuration").get_json()
    assert meta["device_authorization_endpoint"].endswith("/device_authorization")
    assert DEVICE_CODE_GRANT in meta["grant_types_supported"]
