"""Pushed authorization requests (RFC 9126) and signed request objects (RFC 9101): the flow,
and every misuse refused with the spec's error code, changing nothing."""

import dataclasses
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from idp.context import runtime
from idp.extensions import db
from idp.oidc.models import AuthorizationCode, PushedRequest
from tests.fapi_support import (
    ISSUER,
    alg_none,
    authorization_params,
    client_auth,
    make_keyed_client,
    new_key,
    request_object,
)
from tests.helpers import REDIRECT, login, make_client, make_user, query

URN = "urn:ietf:params:oauth:request_uri:"


@pytest.fixture
def signed_in(ctx, client):
    make_user()
    assert login(client).status_code == 302
    return client


def push(http, rp, params, **auth):
    data = dict(params)
    data.update(auth or client_auth(rp))
    return http.post("/par", data=data)


def codes() -> int:
    return db.session.scalar(select(func.count()).select_from(AuthorizationCode))


def test_pushed_request_gives_a_single_use_request_uri(signed_in):
    rp = make_keyed_client()
    params, _ = authorization_params(rp)
    pushed = push(signed_in, rp, params)
    assert pushed.status_code == 201, pushed.text
    body = pushed.get_json()
    assert body["request_uri"].startswith(URN) and body["expires_in"] == 90
    assert pushed.headers["Cache-Control"] == "no-store"
    url = "/authorize?" + urlencode({"client_id": rp.client_id,
                                     "request_uri": body["request_uri"]})
    first = signed_in.get(url)
    assert first.status_code == 302, first.text
    got = query(first.headers["Location"])
    assert got["code"] and got["state"] == params["state"] and got["iss"] == ISSUER
    before = codes()
    again = signed_in.get(url)  # the same request_uri a second time
    assert again.status_code == 400 and "Location" not in again.headers
    assert "invalid_request_uri" in again.text
    assert codes() == before


def test_request_uri_expires_unused(signed_in, frozen):
    rp = make_keyed_client()
    uri = push(signed_in, rp, authorization_params(rp)[0]).get_json()["request_uri"]
    frozen.advance(91)
    response = signed_in.get("/authorize?" + urlencode({"client_id": rp.client_id,
                                                        "request_uri": uri}))
    assert response.status_code == 400 and "invalid_request_uri" in response.text
    assert codes() == 0


def test_request_uri_of_another_client_is_refused(signed_in):
    rp, other = make_keyed_client(), make_client()
    uri = push(signed_in, rp, authorization_params(rp)[0]).get_json()["request_uri"]
    response = signed_in.get("/authorize?" + urlencode({"client_id": other.client_id,
                                                        "request_uri": uri}))
    assert response.status_code == 400 and "invalid_request_uri" in response.text
    assert codes() == 0


def test_client_secret_client_can_push_and_public_client_with_its_id(signed_in):
    secret_rp = make_client()
    params, _ = authorization_params(secret_rp)
    pushed = signed_in.post("/par", data=params, auth=(secret_rp.client_id,
                                                       secret_rp.client_secret))
    assert pushed.status_code == 201
    public = make_client(public=True)
    params, _ = authorization_params(public)
    assert signed_in.post("/par", data=params).status_code == 201


@pytest.mark.parametrize("change,error,status", [
    ({"redirect_uri": "https://evil.example/cb"}, "invalid_request", 400),
    ({"scope": "profile"}, "invalid_scope", 400),
    ({"code_challenge_method": "plain"}, "invalid_request", 400),
    ({"request_uri": URN + "x"}, "invalid_request", 400),
    ({"response_type": "token"}, "unsupported_response_type", 400),
])
def test_a_bad_pushed_request_is_refused_and_not_kept(signed_in, change, error, status):
    rp = make_keyed_client()
    params, _ = authorization_params(rp, **change)
    response = push(signed_in, rp, params)
    assert response.status_code == status and response.get_json()["error"] == error
    assert "Location" not in response.headers
    assert db.session.scalar(select(func.count()).select_from(PushedRequest)) == 0


def test_an_unauthenticated_push_is_refused(signed_in):
    rp = make_client()
    params, _ = authorization_params(rp)
    response = signed_in.post("/par", data=params, auth=(rp.client_id, "wrong"))
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"
    assert db.session.scalar(select(func.count()).select_from(PushedRequest)) == 0


def test_client_required_to_push_cannot_send_a_plain_request(signed_in):
    rp = make_client(require_par=True)
    params, _ = authorization_params(rp)
    response = signed_in.get("/authorize?" + urlencode(params))
    assert response.status_code == 400 and "Location" not in response.headers
    assert "PAR" in response.text and codes() == 0
    pushed = signed_in.post("/par", data=params, auth=(rp.client_id, rp.client_secret))
    uri = pushed.get_json()["request_uri"]
    ok = signed_in.get("/authorize?" + urlencode({"client_id": rp.client_id,
                                                  "request_uri": uri}))
    assert ok.status_code == 302 and "code" in query(ok.headers["Location"])


def test_policy_can_require_par_of_every_client(signed_in, monkeypatch):
    rt = runtime()
    fapi = rt.policy.fapi
    par = dataclasses.replace(fapi.par, require_for_all=True)
    monkeypatch.setattr(rt, "policy", dataclasses.replace(
        rt.policy, fapi=dataclasses.replace(fapi, par=par)))
    rp = make_client()
    params, _ = authorization_params(rp)
    assert signed_in.get("/authorize?" + urlencode(params)).status_code == 400
    assert codes() == 0


def test_discovery_advertises_par_and_request_objects(ctx, client):
    meta = client.get("/.well-known/openid-configuration").get_json()
    assert meta["pushed_authorization_request_endpoint"] == f"{ISSUER}/par"
    assert meta["require_pushed_authorization_requests"] is False
    assert meta["request_parameter_supported"] is True
    assert meta["request_uri_parameter_supported"] is False  # never fetched
    assert "ES256" in meta["request_object_signing_alg_values_supported"]
    assert meta["authorization_response_iss_parameter_supported"] is True


# -- request objects (RFC 9101) --------------------------------------------------------------
def test_request_object_by_value_and_pushed(signed_in):
    rp = make_keyed_client()
    params, _ = authorization_params(rp)
    by_value = signed_in.get("/authorize?" + urlencode(
        {"client_id": rp.client_id, "request": request_object(rp, params)}))
    assert by_value.status_code == 302, by_value.text
    assert query(by_value.headers["Location"])["state"] == params["state"]
    params, _ = authorization_params(rp)
    pushed = push(signed_in, rp, {"client_id": rp.client_id,
                                  "request": request_object(rp, params)})
    assert pushed.status_code == 201, pushed.text
    done = signed_in.get("/authorize?" + urlencode(
        {"client_id": rp.client_id, "request_uri": pushed.get_json()["request_uri"]}))
    assert done.status_code == 302 and query(done.headers["Location"])["code"]


def test_only_the_request_objects_parameters_count(signed_in):
    """RFC 9101 §6.3: a parameter beside the object (here a redirect_uri) is ignored."""
    rp = make_keyed_client()
    params, _ = authorization_params(rp)
    response = signed_in.get("/authorize?" + urlencode(
        {"client_id": rp.client_id, "request": request_object(rp, params),
         "redirect_uri": "https://evil.example/cb", "state": "other"}))
    assert response.headers["Location"].startswith(REDIRECT)
    assert query(response.headers["Location"])["state"] == params["state"]


def _bad_objects(rp, other_key, params):
    yield "another client's key", request_object(rp, params, key=other_key)
    yield "alg none", alg_none({"iss": rp.client_id, "aud": ISSUER,
                                "client_id": rp.client_id, **params})
    yield "wrong aud", request_object(rp, params, aud="https://other-idp.example")
    yield "expired", request_object(rp, params, iat_offset=-600, lifetime=120)
    yield "no typ", request_object(rp, params, typ=None)
    yield "living too long", request_object(rp, params, lifetime=86400)
    yield "another client_id", request_object(rp, params, client_id="someone-else")


@pytest.mark.parametrize("case", ["another client's key", "alg none", "wrong aud", "expired",
                                  "no typ", "living too long", "another client_id"])
def test_bad_request_objects_are_refused(signed_in, case):
    rp = make_keyed_client()
    params, _ = authorization_params(rp)
    token = dict(_bad_objects(rp, new_key(), params))[case]
    at_authorize = signed_in.get("/authorize?" + urlencode(
        {"client_id": rp.client_id, "request": token}))
    assert at_authorize.status_code == 400 and "Location" not in at_authorize.headers
    assert "invalid_request_object" in at_authorize.text
    pushed = push(signed_in, rp, {"client_id": rp.client_id, "request": token})
    assert pushed.status_code == 400
    assert pushed.get_json()["error"] == "invalid_request_object"
    assert codes() == 0
    assert db.session.scalar(select(func.count()).select_from(PushedRequest)) == 0
