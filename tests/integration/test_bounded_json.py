"""Deep and wide JSON at every endpoint: a 400 in the endpoint's error format, never a 500, and
nothing stored (idp.core.bounded_json behind Flask's JSON provider).

Before the bound, 3,000 nested `{"a":` (18 KB) crashed /register with a RecursionError. Every
route that takes a body is enumerated from app.url_map (a new JSON endpoint is covered without
editing this file) and gets every shape, anonymous and signed in (no 500 anywhere); the
endpoints that parse JSON are then checked one by one, with the credentials that get a request
as far as the parser, for their error and for nothing stored.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.routing import IntegerConverter

from idp.admin import service
from idp.admin.models import InitialAccessToken
from idp.core import bounded_json
from idp.extensions import db
from idp.mfa.models import Factor
from idp.oidc.models import Client
from tests.helpers import csrf_from, login, make_user

DEEP = '{"a":' * 3000 + "1" + "}" * 3000            # 18 KB, the review's crash
DEEP_ARRAY = "[" * 20_000 + "]" * 20_000            # 40 KB, under the body limit
WIDE = "[" + ",".join(["0"] * 20_000) + "]"         # 40 KB, 20,000 values
WIDE_OBJECT = "{" + ",".join(['"a":0'] * 10_500) + "}"  # 63 KB, 10,500 members
SHAPES = {"deep": DEEP, "deep_array": DEEP_ARRAY, "wide": WIDE, "wide_object": WIDE_OBJECT}
META = {"client_name": "Scheduling app", "redirect_uris": ["https://sched.example/cb"],
        "scope": "openid profile email"}


def test_the_bounds_themselves():
    assert bounded_json.loads('{"a": [1, {"b": "[[[{{{"}]}') == {"a": [1, {"b": "[[[{{{"}]}
    assert bounded_json.loads("[" * 32 + "]" * 32) is not None
    for text in ("[" * 33 + "]" * 33, DEEP, WIDE, WIDE_OBJECT):
        with pytest.raises(ValueError):
            bounded_json.loads(text)
    assert len(bounded_json.loads(",".join(["1"] * 5_000).join("[]"))) == 5_000
    with pytest.raises(bounded_json.JsonTooComplex):
        bounded_json.check(",".join(["1"] * 10_002).join("[]"))
    with pytest.raises(ValueError):
        bounded_json.loads(b"\xff\xfe")  # not UTF-8: a ValueError as well


def _body_routes(app: Flask) -> list[tuple[str, str]]:
    adapter = app.url_map.bind("localhost")
    found = []
    for rule in app.url_map.iter_rules():
        values = {name: 1 if isinstance(converter, IntegerConverter) else "x"
                  for name, converter in rule._converters.items()}  # noqa: SLF001
        for method in sorted((rule.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}):
            found.append((method, adapter.build(rule.endpoint, values, method=method)))
    return sorted(found)


@pytest.mark.parametrize("who", ["anonymous", "signed_in"])
def test_every_route_survives_deep_and_wide_json(ctx, client, who):
    if who == "signed_in":
        make_user()
        assert login(client).status_code == 302
    routes = _body_routes(ctx)
    assert len(routes) > 40
    # A valid CSRF token, so that the body gets past Flask-WTF to the parser where it would.
    headers = {"X-CSRFToken": csrf_from(client.get("/login").text)}
    for method, url in routes:
        for name, body in SHAPES.items():
            response = client.open(url, method=method, data=body, headers=headers,
                                   content_type="application/json")
            assert response.status_code < 500, (method, url, name, response.status_code)
            assert "Traceback" not in response.text


@pytest.mark.parametrize("shape", SHAPES)
def test_registration_refuses_with_its_error_and_keeps_the_token(ctx, client, shape):
    issued = service.issue_initial_token(actor="test", lifetime=3600, uses=1)
    db.session.commit()
    response = client.post("/register", data=SHAPES[shape], content_type="application/json",
                           headers={"Authorization": f"Bearer {issued.token}"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_client_metadata"
    db.session.rollback()
    assert db.session.execute(sa.select(sa.func.count()).select_from(Client)).scalar_one() == 0
    token = db.session.execute(sa.select(InitialAccessToken)).scalar_one()
    assert token.uses_left == 1  # the refused request did not use it up
    ok = client.post("/register", json=META, headers={"Authorization": f"Bearer {issued.token}"})
    assert ok.status_code == 201  # control: the same token registers a sound body


@pytest.mark.parametrize("shape", SHAPES)
def test_client_configuration_update_refuses_and_changes_nothing(ctx, client, shape):
    issued = service.issue_initial_token(actor="test", lifetime=3600, uses=1)
    db.session.commit()
    doc = client.post("/register", json=META,
                      headers={"Authorization": f"Bearer {issued.token}"}).get_json()
    response = client.put(f"/register/{doc['client_id']}", data=SHAPES[shape],
                          content_type="application/json",
                          headers={"Authorization": f"Bearer {doc['registration_access_token']}"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_client_metadata"
    db.session.rollback()
    row = db.session.execute(sa.select(Client)).scalar_one()
    assert row.client_name == "Scheduling app"


@pytest.mark.parametrize("shape", SHAPES)
def test_webauthn_enrollment_refuses_and_stores_no_factor(ctx, client, shape):
    make_user()
    assert login(client).status_code == 302
    headers = {"X-CSRFToken": csrf_from(client.get("/mfa/enroll/webauthn").text)}
    options = client.post("/mfa/enroll/webauthn/options", json={}, headers=headers)
    assert options.status_code == 200  # a ceremony is under way: the body reaches the parser
    response = client.post("/mfa/enroll/webauthn", data=SHAPES[shape], headers=headers,
                           content_type="application/json")
    assert response.status_code == 400 and "error" in response.get_json()
    db.session.rollback()
    assert db.session.execute(sa.select(sa.func.count()).select_from(Factor).where(
        Factor.kind == "webauthn")).scalar_one() == 0


def _deep_jwt(depth: int = 1400) -> str:
    """A JWT whose payload nests `depth` arrays (Python's parser recurses past ~1000)."""
    import base64

    def part(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    return ".".join((part('{"alg":"RS256","typ":"JWT"}'), part("[" * depth + "]" * depth),
                     "c2ln"))


def test_deep_json_inside_a_jwt_is_refused_where_jwts_are_taken(ctx, client):
    """JWT payloads are JSON an outsider controls too (idp.keys.jwt bounds them)."""
    from tests.helpers import make_client

    token = _deep_jwt()
    assert len(token) < 4096  # under the protocol parameters' length bound: the parser sees it
    rp = make_client()
    hint = client.get("/logout", query_string={"id_token_hint": token})
    assert hint.status_code == 400
    userinfo = client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert userinfo.status_code == 401 and userinfo.get_json()["error"] == "invalid_token"
    assertion = client.post("/token", data={
        "grant_type": "client_credentials", "client_id": rp.client_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": token})
    assert assertion.status_code == 401  # invalid_client (RFC 6749 §5.2)
    assert assertion.get_json()["error"] == "invalid_client"
    introspect = client.post("/introspect", data={"token": token},
                             auth=(rp.client_id, rp.client_secret))
    assert introspect.status_code < 500
