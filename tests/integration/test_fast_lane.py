"""The fast lane (idp/oidc/fast_lane.py): client_credentials tokens and introspection of an
active access token answered in front of Flask. Its answers must be Flask's answers (headers,
body, records, audit), and everything else must still reach Flask and get Flask's answer."""

from __future__ import annotations

import base64

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from idp import create_app
from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.config import Settings
from idp.extensions import db
from idp.oidc.fast_lane import FastLane
from idp.oidc.models import AccessTokenRecord
from tests.conftest import TEST_POLICY
from tests.helpers import basic, exchange, get_code, login, make_client, make_user

CC = {"grant_type": "client_credentials", "scope": "system/Patient.rs"}
PER_ANSWER = {"X-Request-ID", "Content-Length", "Date"}


def lane(app) -> FastLane:
    return app.extensions["idp_fast_lane"]


@pytest.fixture
def service(ctx):
    return make_client(name="Lab interface", grant_types=["client_credentials"],
                       redirect_uri="https://lab.example/cb", scope="system/Patient.rs")


@pytest.fixture
def warm(app, client, service):
    """One request of each kind through Flask: the lane learns the Host and the headers.
    (The app is the session's: forget what earlier tests taught it.)"""
    lane(app).learned.clear()
    lane(app).served = 0
    first = client.post("/token", headers=basic(service), data=CC)
    assert first.status_code == 200 and lane(app).served == 0
    token = first.get_json()["access_token"]
    looked = client.post("/introspect", headers=basic(service), data={"token": token})
    assert looked.get_json()["active"] is True and lane(app).served == 0
    return first, looked


def _same_headers(flask_answer, lane_answer) -> None:
    assert {k for k, _ in flask_answer.headers} == {k for k, _ in lane_answer.headers}
    for name, value in flask_answer.headers:
        if name not in PER_ANSWER:
            assert lane_answer.headers[name] == value, name


def test_a_client_credentials_token_from_the_lane_is_flasks_token(app, client, service, warm):
    flask_answer, _ = warm
    answer = client.post("/token", headers={**basic(service), "User-Agent": "lab-feed/2.1",
                                            "X-Request-ID": "lab-7"}, data=CC)
    assert answer.status_code == 200 and lane(app).served == 1
    _same_headers(flask_answer, answer)
    assert answer.headers["X-Request-ID"] == "lab-7"
    assert answer.headers["Cache-Control"] == "no-store"
    body, before = answer.get_json(), flask_answer.get_json()
    assert set(body) == set(before) and body["scope"] == "system/Patient.rs"
    assert body["expires_in"] == before["expires_in"] and body["token_type"] == "Bearer"
    keys = KeySet.import_key_set(client.get("/jwks.json").get_json())
    ours, theirs = (jwt.decode(t["access_token"], keys) for t in (body, before))
    assert ours.header == theirs.header and ours.header["typ"] == "at+jwt"
    assert set(ours.claims) == set(theirs.claims)
    assert ours.claims["sub"] == service.client_id and ours.claims["jti"] != theirs.claims["jti"]
    # the same records and the same audit event, in one transaction
    assert db.session.get(AccessTokenRecord, ours.claims["jti"]).client_id == service.client_id
    event = db.session.query(AuditEvent).order_by(AuditEvent.seq.desc()).first()
    assert event.event == "token.issued" and event.client_id == service.client_id
    assert event.detail == {"grant_type": "client_credentials", "scope": "system/Patient.rs",
                            "refresh": False}
    assert event.ip == "127.0.0.1" and event.user_agent == "lab-feed/2.1"
    assert audit.verify()[0]


def test_introspection_from_the_lane_is_flasks_answer(app, client, service, warm):
    _, flask_answer = warm
    token = client.post("/token", headers=basic(service), data=CC).get_json()["access_token"]
    answer = client.post("/introspect", headers=basic(service), data={
        "token": token, "token_type_hint": "access_token"})
    assert answer.status_code == 200 and lane(app).served == 2
    _same_headers(flask_answer, answer)
    body = answer.get_json()
    assert body["active"] is True and body["client_id"] == service.client_id
    assert set(body) == set(flask_answer.get_json())


def test_what_the_lane_does_not_answer_gets_flasks_answer(app, client, service, warm):
    flask_answer, _ = warm
    token = flask_answer.get_json()["access_token"]
    other = make_client(name="Other service", grant_types=["client_credentials"],
                        redirect_uri="https://other.example/cb", scope="system/Patient.rs")
    both = make_client(name="Registered with ehr", grant_types=["client_credentials"],
                       redirect_uri="https://both.example/cb",
                       scope="system/Patient.rs ehr.patients.read")
    wrong = base64.b64encode(f"{service.client_id}:not-the-secret".encode()).decode()
    cases = [  # (headers, form, status, error or introspection answer)
        ({"Authorization": f"Basic {wrong}"}, CC, 401, "invalid_client"),
        (basic(service), {**CC, "scope": "system/Patient.rs roles"}, 400, "invalid_scope"),
        (basic(service), {**CC, "scope": "system/Observation.rs"}, 400, "invalid_scope"),
        # a user-level clinical scope: never in a user-less token
        (basic(both), {**CC, "scope": "ehr.patients.read"}, 400, "invalid_scope"),
        (basic(service), {"grant_type": "client_credentials", "scope": "no.such.scope"}, 400,
         "invalid_scope"),
        (basic(service), "grant_type=client_credentials&grant_type=client_credentials", 400,
         "invalid_request"),
        (basic(service), "grant_type=client_credentials&scope=system%2FPatient.rs%00", 400,
         "invalid_request"),
        (basic(other), {"token": token}, 200, {"active": False}),  # another client's token
        (basic(service), {"token": token + "x"}, 200, {"active": False}),
        (basic(service), {"token": token, "token_type_hint": "bogus"}, 400,
         "unsupported_token_type"),
    ]
    for headers, form, status, expected in cases:
        path = "/introspect" if "token" in form else "/token"
        answer = client.post(path, headers=headers, data=form,
                             content_type="application/x-www-form-urlencoded")
        assert answer.status_code == status, (form, answer.text)
        got = answer.get_json()
        assert (got if isinstance(expected, dict) else got["error"]) == expected, form
    assert lane(app).served == 0
    # a revoked token: the lane sees it inactive and leaves the answer to Flask
    assert client.post("/revoke", headers=basic(service), data={"token": token}
                       ).status_code == 200
    answer = client.post("/introspect", headers=basic(service), data={"token": token})
    assert answer.get_json() == {"active": False} and lane(app).served == 0


def test_a_host_flask_has_not_answered_goes_to_flask(app, client, service, warm):
    elsewhere = client.post("/token", headers=basic(service), data=CC,
                            base_url="http://evil.example")
    assert elsewhere.status_code == 400 and lane(app).served == 0
    assert client.post("/token", headers=basic(service), data=CC).status_code == 200
    assert lane(app).served == 1


def test_a_disabled_client_is_refused_at_once(app, client, service, warm):
    from idp.oidc.models import Client

    db.session.query(Client).filter_by(client_id=service.client_id).update({"disabled": True})
    db.session.commit()
    answer = client.post("/token", headers=basic(service), data=CC)
    assert answer.status_code == 401 and answer.get_json()["error"] == "invalid_client"
    assert lane(app).served == 0


def test_idp_fast_lane_0_leaves_every_request_to_flask(env):
    off = create_app(Settings.from_env({**env, "IDP_FAST_LANE": "0"}),
                     policy_overrides=TEST_POLICY)
    assert "idp_fast_lane" not in off.extensions
    assert not isinstance(off.wsgi_app, FastLane)


def test_a_users_token_introspects_alike_in_the_lane_and_in_flask(app, client, warm):
    user = make_user()
    rp = make_client()
    assert login(client).status_code == 302
    code, verifier, _ = get_code(client, rp)
    token = exchange(client, rp, code, verifier).get_json()["access_token"]
    served = lane(app).served
    fast = client.post("/introspect", headers=basic(rp), data={"token": token})
    assert lane(app).served == served + 1
    lane(app).enabled = False
    try:
        slow = client.post("/introspect", headers=basic(rp), data={"token": token})
    finally:
        lane(app).enabled = True
    assert lane(app).served == served + 1
    assert fast.get_json() == slow.get_json()
    assert fast.get_json()["username"] == user.username and fast.get_json()["sub"] == user.subject
    _same_headers(slow, fast)
