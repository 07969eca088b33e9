"""Property-based (hypothesis): hostile requests to the protocol endpoints never get a 5xx or
a stack trace, and change nothing in the database but the audit trail.

Each example is one request to /authorize, /token, /userinfo, /revoke, /introspect, /register
or /logout, built from: known and random parameter names, repeated parameters, random,
oversized, NUL-carrying and non-UTF-8 values, raw invalid bytes, well-formed and malformed
JSON, assorted content types and Authorization headers (including a real client's
credentials, so requests get past client authentication into the grants). Before and after
each request every table's row count is taken: only audit rows may grow (a refused request
is audited; nothing else may be written).

The browser is anonymous (a signed-in one would legitimately mint codes), and no example can
hold valid credentials together with a valid grant. Bounded: max_examples per endpoint,
deadline=None (CI machines are noisy); the whole module takes a few seconds.
"""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import REDIRECT, make_client, make_user

ENDPOINTS = {
    "/authorize": ("GET",),
    "/token": ("POST",),
    "/userinfo": ("GET", "POST"),
    "/revoke": ("POST",),
    "/introspect": ("POST",),
    "/register": ("POST",),
    "/logout": ("GET", "POST"),
}
AUDIT_TABLES = {"audit_events", "audit_head"}
PARAMS = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "prompt",
          "max_age", "code_challenge", "code_challenge_method", "grant_type", "code",
          "code_verifier", "refresh_token", "token", "token_type_hint", "access_token",
          "client_secret", "client_assertion", "client_assertion_type", "id_token_hint",
          "post_logout_redirect_uri", "confirm", "acr_values", "request", "request_uri")
CONTENT_TYPES = ("application/x-www-form-urlencoded", "application/json", "text/plain",
                 "multipart/form-data", "multipart/form-data; boundary=x", "",
                 "application/x-www-form-urlencoded; charset=latin-1", "application/jwt",
                 "application/x-www-form-urlencoded; charset=utf-16", "*/*")

MAX_EXAMPLES = 60


@pytest.fixture
def world(app):
    """A client (with its real secret), a public client and an account; no session."""
    from idp.extensions import db

    with app.app_context():
        make_user()
        rp = make_client()
        public = make_client(redirect_uri="http://127.0.0.1/cb", public=True,
                             first_party=False, name="Native")
        service = make_client(name="Service", grant_types=["client_credentials"],
                              redirect_uri="https://svc.example/cb", scope="system/Patient.rs")
        db.session.commit()
    # One valid request of each through Flask, so the fast lane (idp/oidc/fast_lane.py) stands
    # in front of /token and /introspect for the examples, as in a running server.
    http = app.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(
        f"{service.client_id}:{service.client_secret}".encode()).decode()}
    token = http.post("/token", headers=auth, data={"grant_type": "client_credentials"})
    assert token.status_code == 200, token.text
    looked = http.post("/introspect", headers=auth, data={"token": token.json["access_token"]})
    assert looked.json["active"] is True
    return {"rp": rp, "public": public}


def _tables(app) -> dict[str, int]:
    from idp.extensions import db

    with app.app_context():
        counts = {table.name: db.session.execute(
            sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in db.metadata.sorted_tables}
        db.session.rollback()
    return counts


# -- strategies ---------------------------------------------------------------------------------
def values(world: dict) -> st.SearchStrategy[str]:
    rp = world["rp"]
    known = st.sampled_from([
        rp.client_id, world["public"].client_id, REDIRECT, "code", "authorization_code",
        "refresh_token", "client_credentials", "openid", "openid profile offline_access",
        "S256", "plain", "none", "login", "access_token", "yes", "a.b.c",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "http://127.0.0.1:5000/cb"])
    return st.one_of(
        known,
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(lambda s: s + "\x00"),
        st.integers(min_value=4000, max_value=70_000).map(lambda n: "A" * n),
        st.text(alphabet="\u202e\ufeff\u0000\r\n\t %&=+;é漢", max_size=30),
    )


def names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(PARAMS), st.text(max_size=12))


def bases(world: dict, path: str) -> list[dict[str, str]]:
    """Valid-looking requests for the endpoint, which the examples then break."""
    rp, public = world["rp"], world["public"]
    return {
        "/authorize": [
            {"response_type": "code", "client_id": rp.client_id, "redirect_uri": REDIRECT,
             "scope": "openid profile", "state": "st", "nonce": "n", "code_challenge": "c" * 43,
             "code_challenge_method": "S256"},
            {"response_type": "code", "client_id": public.client_id, "prompt": "none",
             "redirect_uri": "http://127.0.0.1:5000/cb", "scope": "openid"}],
        "/token": [
            {"grant_type": "authorization_code", "code": "c0de", "redirect_uri": REDIRECT,
             "code_verifier": "v" * 43},
            {"grant_type": "refresh_token", "refresh_token": "r" * 43, "scope": "openid"},
            {"grant_type": "client_credentials", "scope": "system/Patient.rs",
             "client_id": public.client_id}],
        "/userinfo": [{"access_token": "a.b.c"}, {}],
        "/revoke": [{"token": "t" * 43, "token_type_hint": "refresh_token"},
                    {"token": "a.b.c", "token_type_hint": "access_token"}],
        "/introspect": [{"token": "t" * 43, "token_type_hint": "access_token"}],
        "/register": [{"client_name": "x", "redirect_uris": REDIRECT}],
        "/logout": [{"id_token_hint": "a.b.c", "post_logout_redirect_uri": REDIRECT,
                     "client_id": rp.client_id, "state": "s"}, {"confirm": "yes"}],
    }[path]


@st.composite
def pairs(draw: st.DrawFn, world: dict, path: str) -> list[tuple[str, str]]:
    """A base request broken by a few operations: drop, replace, repeat, add unknown."""
    params = list(draw(st.sampled_from(bases(world, path))).items())
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        op = draw(st.sampled_from(("drop", "replace", "repeat", "add")))
        if op == "add" or not params:
            params.append((draw(names()), draw(values(world))))
            continue
        index = draw(st.integers(min_value=0, max_value=len(params) - 1))
        name, value = params[index]
        if op == "drop":
            params.pop(index)
        elif op == "replace":
            params[index] = (name, draw(values(world)))
        else:
            params.append((name, draw(st.one_of(st.just(value), values(world)))))
    return params


def json_values() -> st.SearchStrategy[object]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=30))
    return st.recursive(scalars, lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.one_of(st.sampled_from(
            ("redirect_uris", "client_name", "grant_types", "token", "jwks")), st.text(
            max_size=10)), kids, max_size=5)), max_leaves=12)


def _urlencode(params: list[tuple[str, str]]) -> bytes:
    return urlencode([(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass"))
                      for k, v in params]).encode()


FORM = "application/x-www-form-urlencoded"


def bodies(world: dict, path: str) -> st.SearchStrategy[tuple[bytes, str]]:
    form = st.tuples(pairs(world, path).map(_urlencode),
                     st.one_of(st.just(FORM), st.sampled_from(CONTENT_TYPES)))
    as_json = st.tuples(pairs(world, path).map(lambda ps: json.dumps(dict(ps)).encode()),
                        st.just("application/json"))
    js = st.tuples(json_values().map(lambda v: json.dumps(v).encode()),
                   st.sampled_from(CONTENT_TYPES))
    raw = st.tuples(st.binary(max_size=400), st.sampled_from(CONTENT_TYPES))
    broken_json = st.tuples(st.sampled_from([
        b"{", b"[", b'{"a":', b"\xff\xfe{}", b'{"a":1}}', b"nul", b'{"redirect_uris": ["\x00"]}',
        b"\x00"]), st.just("application/json"))
    return st.one_of(form, form, as_json, js, raw, broken_json)


def queries(world: dict, path: str) -> st.SearchStrategy[bytes]:
    return st.one_of(pairs(world, path).map(_urlencode), st.binary(max_size=200),
                     st.sampled_from([b"a=%ff%fe", b"%", b"a=%zz", b"client_id=\xff"]))


def authorizations(world: dict) -> st.SearchStrategy[str | None]:
    rp = world["rp"]
    basic = base64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()
    return st.one_of(st.none(), st.just(f"Basic {basic}"), st.sampled_from([
        "Basic !!!", "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
        "Bearer", "Bearer garbage", "Bearer a.b.c", "Digest x"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60))


def requests(world: dict, path: str) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({
        "method": st.sampled_from(ENDPOINTS[path]),
        "query": st.one_of(st.none(), queries(world, path)),
        "body": st.one_of(st.none(), bodies(world, path)),
        "authorization": authorizations(world),
    })


# -- the property -------------------------------------------------------------------------------
def _send(app, path: str, req: dict):
    from idp.extensions import limiter

    limiter.reset()  # throttling would answer 429 before the code under test runs
    http = app.test_client()
    kwargs: dict = {"method": req["method"], "headers": {}}
    if req["query"] is not None:
        kwargs["environ_overrides"] = {"QUERY_STRING": req["query"].decode("latin-1")}
    if req["body"] is not None and req["method"] == "POST":
        kwargs["data"], kwargs["content_type"] = req["body"]
    if req["authorization"] is not None:
        kwargs["headers"]["Authorization"] = req["authorization"]
    return http.open(path, **kwargs)


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_hostile_requests_never_fail_the_server_or_write_anything_but_audit(
        app, world, path, caplog):
    caplog.set_level(logging.ERROR, logger="idp")

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(req=requests(world, path))
    def prop(req: dict) -> None:
        before = _tables(app)
        caplog.clear()
        response = _send(app, path, req)
        body = response.get_data().decode("utf-8", "replace")
        assert response.status_code < 500, (response.status_code, body[:300])
        assert "Traceback" not in body and 'File "' not in body
        unhandled = [r.getMessage() for r in caplog.records if "unhandled" in r.getMessage()]
        assert not unhandled, unhandled
        if path in ("/token", "/revoke", "/introspect", "/register") \
                and response.status_code >= 400:
            assert response.is_json and "error" in response.get_json(), body[:300]
        after = _tables(app)
        changed = {name: (before[name], after[name]) for name in before
                   if before[name] != after[name]}
        assert set(changed) <= AUDIT_TABLES, f"{req['method']} {path} wrote {changed}"
        assert all(new >= old for old, new in changed.values()), changed

    prop()
