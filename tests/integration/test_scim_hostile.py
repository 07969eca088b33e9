"""Hostile input to /scim/v2 (hypothesis and hand-picked): random and malformed bodies,
attribute names and values, filters, PATCH operations and query parameters never get a 5xx,
always get a SCIM error document, and a refused write changes nothing (row counts of every
table but the audit trail's are the same before and after). Also: an oversized body (413),
a NUL in a value, two creates of one userName at the same moment (one 201, one 409)."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idp.extensions import db
from tests.integration.scim_helpers import CLINICIAN, PATCH_OP, Scim, make_token, user_body

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ATTRS = ["userName", "name", "emails", "active", "password", "externalId", "id", "meta",
         "schemas", "groups", "displayName", "phoneNumbers", CLINICIAN, "nope", "",
         "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
PATHS = ["userName", "active", "emails", 'emails[type eq "work"].value', "name.givenName",
         "id", "meta.version", f"{CLINICIAN}:npi", f"{CLINICIAN}:licenses", "members",
         'members[value eq "x"]', "emails[", "a" * 300, "", None]
SKIP = {"audit_events", "audit_head", "scim_tokens"}
JSONS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.sampled_from(["False", "True", "1234567893", "CA", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(ATTRS + ["value", "type", "primary", "op", "path"]) | st.text(max_size=8),
        inner, max_size=5), max_leaves=20)
FILTER_PARTS = st.sampled_from(['userName', 'eq', 'co', '"x"', '(', ')', '[', ']', 'and',
                                'or', 'not', 'pr', 'emails', '.value', 'true', '1', 'zz',
                                f'{CLINICIAN}:npi', 'meta.created', 'gt', '"2020-01-01"', ' '])


@pytest.fixture
def scim(ctx, client):
    http = Scim(client, make_token("fuzz"))
    made = http("POST", "/Users", user_body("victim@hospital.example"))
    assert made.status_code == 201
    http.victim = made.get_json(force=True)["id"]
    return http


def _counts() -> dict[str, int]:
    db.session.rollback()
    return {t.name: db.session.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in db.metadata.sorted_tables if t.name not in SKIP}


def _check(response, before: dict[str, int]) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        body = response.get_json(force=True)
        assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        assert body["status"] == str(response.status_code) and body["detail"]
        assert "Traceback" not in body["detail"]
        assert _counts() == before


HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=80, deadline=None, suppress_health_check=HEALTH)
@given(body=JSONS, method=st.sampled_from(["POST", "PUT", "PATCH"]))
def test_random_bodies(scim, body, method):
    before = _counts()
    path = "/Users" if method == "POST" else f"/Users/{scim.victim}"
    _check(scim(method, path, body), before)


@settings(max_examples=80, deadline=None, suppress_health_check=HEALTH)
@given(ops=st.lists(st.fixed_dictionaries({
    "op": st.sampled_from(["add", "Replace", "remove", "frob", "", 3]),
    "path": st.sampled_from(PATHS), "value": JSONS}), min_size=1, max_size=3))
def test_random_patch_operations(scim, ops):
    ops = [{k: v for k, v in op.items() if v is not None} for op in ops]
    before = _counts()
    _check(scim("PATCH", f"/Users/{scim.victim}", {"schemas": [PATCH_OP], "Operations": ops}),
           before)


@settings(max_examples=80, deadline=None, suppress_health_check=HEALTH)
@given(parts=st.lists(FILTER_PARTS, max_size=14), extra=st.text(max_size=10),
       start=st.sampled_from(["", "0", "-5", "x", "99999999999999999999"]),
       count=st.sampled_from(["", "0", "-1", "1", "1e3", "100000"]),
       sort=st.sampled_from(["", "userName", "password", "meta.created", "nope"]))
def test_random_queries(scim, parts, extra, start, count, sort):
    from urllib.parse import urlencode

    query = urlencode({"filter": " ".join(parts) + extra, "startIndex": start, "count": count,
                       "sortBy": sort})
    for path in ("/Users", "/Groups"):
        response = scim("GET", f"{path}?{query}")
        _check(response, _counts())


def test_oversized_body(scim):
    before = _counts()
    huge = json.dumps(user_body("big@hospital.example", displayName="x" * 3_000_000))
    _check(scim("POST", "/Users", raw=huge), before)
    assert scim("POST", "/Users", raw=huge).status_code == 413


def test_nul_in_a_value(scim):
    before = _counts()
    response = scim("POST", "/Users", raw=json.dumps(user_body("nul@hospital.example",
                                                               displayName="a\u0000b")))
    _check(response, before)
    assert response.status_code == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", ""])
def test_other_content_types_still_json(scim, content_type):
    response = scim("POST", "/Users", user_body("ct@hospital.example"),
                    headers={"Content-Type": content_type})
    assert response.status_code == 201


def test_concurrent_duplicate_create(app, scim):
    db.session.commit()
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def create() -> None:
        with app.app_context():
            http = Scim(app.test_client(), scim.token)
            barrier.wait()
            codes.append(http("POST", "/Users", user_body("twin@hospital.example"))
                         .status_code)

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [201, 409]
