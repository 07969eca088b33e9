"""EPCS prescriptions as RFC 9396 authorization_details (21 CFR 1311.140(a)(3)-(4)): sent only
in a pushed request of the authenticated EHR or a signed request object; shown at the ceremony
with the DEA statement; bound to the ceremony; carried with their SHA-256 in the access token;
each signature audited. Every malformed or untrusted request is refused and changes nothing."""

from __future__ import annotations

import copy
import hashlib
import json
from urllib.parse import urlencode

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import func, select

from idp.context import policy
from idp.epcs import details as rx
from idp.epcs.models import EpcsCeremony
from idp.extensions import db
from tests.fapi_support import authorization_params, make_keyed_client, request_object
from tests.helpers import exchange, make_client, query
from tests.integration.test_epcs import (
    EPCS,
    RX,
    ceremony_password,
    events,
    grant,
    hardware_step,
)
from tests.integration.test_epcs_keys import seed_epcs_key, trust_test_vendor
from tests.integration.test_webauthn_service import (
    SoftAuthenticator,
    password_step,
    totp_step,
)


def prescription(number: int = 1, **drug) -> dict:
    return {
        "type": "epcs_prescription", "prescription_id": f"RX-{9000 + number}",
        "patient": {"name": "Maria Lopez", "address": "12 Elm Street, Springfield, IL 62701"},
        "drug": {"name": "Oxycodone hydrochloride", "strength": "5 mg",
                 "dosage_form": "tablet", "quantity": "20 (twenty) tablets",
                 "directions": "1 tablet by mouth every 6 hours as needed for pain",
                 "refills": 0, **drug},
        "prescriber": {"name": "Dr. Alex Smith", "address": "1 Hospital Way, Springfield",
                       "dea_number": "AS1234563"}}


TWO = [prescription(1), prescription(2, name="Lorazepam", strength="1 mg",
                                     quantity="30 (thirty) tablets", refills=2,
                                     directions="1 tablet at bedtime")]


def ceremonies() -> int:
    return db.session.scalar(select(func.count()).select_from(EpcsCeremony))


def signing_params(rp, details=TWO, **extra):
    raw = details if isinstance(details, str) else json.dumps(details)
    return authorization_params(rp, scope="openid profile roles", acr_values=EPCS,
                                max_age="0", binding_message=RX, authorization_details=raw,
                                **extra)


def push(http, rp, params):
    return http.post("/par", data=params, auth=(rp.client_id, rp.client_secret))


def authorize_pushed(http, rp, uri):
    return http.get("/authorize?" + urlencode({"client_id": rp.client_id, "request_uri": uri}))


@pytest.fixture
def prescriber(ctx, client, monkeypatch):
    from tests.helpers import make_user
    trust_test_vendor(monkeypatch)
    user = make_user()
    key = SoftAuthenticator()
    seed_epcs_key(user, key)
    grant(user)
    password_step(client)
    totp_step(client)
    return key


def sign(http, key, rp, params, verifier, location):
    page, done = ceremony_password(http, location)
    challenge, back = hardware_step(http, key)
    answer = http.get(back)
    assert answer.headers["Location"].startswith(rp.redirect_uri), answer.headers["Location"]
    body = exchange(http, rp, query(answer.headers["Location"])["code"], verifier).get_json()
    access = jwt.decode(body["access_token"], KeySet.import_key_set(
        http.get("/jwks.json").get_json())).claims
    return page, challenge, body, access


def test_two_prescriptions_pushed_shown_signed_hashed_and_audited(prescriber, client):
    rp = make_client()
    params, verifier = signing_params(rp)
    pushed = push(client, rp, params)
    assert pushed.status_code == 201, pushed.text
    response = authorize_pushed(client, rp, pushed.get_json()["request_uri"])
    location = response.headers["Location"]
    assert location.startswith("/epcs/ceremony/"), location
    page, challenge, body, access = sign(client, prescriber, rp, params, verifier, location)

    statement = policy().epcs.statement
    for shown in (page.text, challenge.text):  # both screens of the two-factor prompt
        assert statement.replace("(s)", "") in shown.replace("(s)", "")
        for item in TWO:
            for value in (item["prescription_id"], item["patient"]["name"],
                          item["patient"]["address"], item["drug"]["name"],
                          item["drug"]["strength"], item["drug"]["dosage_form"],
                          item["drug"]["quantity"], item["drug"]["directions"],
                          item["prescriber"]["name"], item["prescriber"]["address"],
                          item["prescriber"]["dea_number"]):
                assert value in shown, value

    expected = hashlib.sha256(json.dumps(TWO, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode()).hexdigest()
    assert access["authorization_details"] == TWO
    assert access["epcs_signature"]["sha256"] == expected
    assert access["epcs_signature"]["canonicalization"] == "RFC8785"
    assert set(access["epcs_signature"]["prescriptions"]) == {"RX-9001", "RX-9002"}
    assert body["authorization_details"] == TWO
    assert access["acr"] == EPCS

    signed = events("epcs.signed")
    assert [e.detail["prescription_id"] for e in signed] == ["RX-9001", "RX-9002"]
    assert [e.detail["sha256"] for e in signed] == rx.entry_hashes(TWO)
    assert {e.detail["details_sha256"] for e in signed} == {expected}
    [row] = db.session.execute(select(EpcsCeremony)).scalars()
    assert row.details_sha256 == expected and row.family_id


def test_a_signed_request_object_carries_the_details_as_an_array(prescriber, client):
    rp = make_keyed_client(scope="openid profile roles")
    params, verifier = authorization_params(rp, scope="openid profile roles",
                                            acr_values=EPCS, max_age="0", binding_message=RX)
    token = request_object(rp, {**params, "authorization_details": TWO[:1]})
    response = client.get("/authorize?" + urlencode({"client_id": rp.client_id,
                                                     "request": token}))
    location = response.headers["Location"]
    assert location.startswith("/epcs/ceremony/"), location
    page, _ = ceremony_password(client, location)
    assert TWO[0]["prescriber"]["dea_number"] in page.text
    assert db.session.execute(select(EpcsCeremony.details_sha256)).scalar_one() == \
        rx.sha256(TWO[:1])


def test_details_in_a_plain_query_are_refused(prescriber, client):
    rp = make_client()
    params, _ = signing_params(rp)
    response = client.get("/authorize?" + urlencode(params))
    got = query(response.headers["Location"])
    assert got["error"] == "invalid_request" and got["state"] == params["state"]
    assert "pushed authorization request" in got["error_description"]
    assert ceremonies() == 0 and not events("epcs.ceremony_started")


def test_a_public_clients_push_does_not_count(prescriber, client):
    rp = make_client(public=True)
    params, _ = signing_params(rp)
    pushed = client.post("/par", data={**params, "client_id": rp.client_id})
    assert pushed.status_code == 400, pushed.text
    assert pushed.get_json()["error"] == "invalid_request"
    assert ceremonies() == 0


def _bad(name: str):
    base = copy.deepcopy(TWO[0])
    if name == "wrong_type":
        return [{**base, "type": "payment_initiation"}]
    if name == "missing_dea":
        del base["prescriber"]["dea_number"]
        return [base]
    if name == "bad_dea":
        base["prescriber"]["dea_number"] = "12345"
        return [base]
    if name == "extra_member":
        base["drug"]["note"] = "x"
        return [base]
    if name == "refills_string":
        base["drug"]["refills"] = "2"
        return [base]
    if name == "refills_fraction":
        return json.dumps([base]).replace('"refills": 0', '"refills": 1.0')
    if name == "too_long":
        base["drug"]["directions"] = "x" * 501
        return [base]
    if name == "too_many":
        return [prescription(n) for n in range(1, policy().epcs.details.max_prescriptions + 2)]
    if name == "too_big":  # one byte over epcs.toml max_bytes (under web.toml's bound)
        text = json.dumps(TWO)
        return text + " " * (policy().epcs.details.max_bytes + 1 - len(text))
    if name == "not_json":
        return "[{"
    if name == "object":
        return json.dumps(base)
    if name == "empty":
        return "[]"
    if name == "duplicate_member":
        return json.dumps([base])[:-2] + ', "type": "epcs_prescription"}]'
    if name == "duplicate_id":
        return [base, copy.deepcopy(base)]
    if name == "deep":
        return "[" * 40 + "]" * 40
    raise AssertionError(name)


BAD = ["wrong_type", "missing_dea", "bad_dea", "extra_member", "refills_string",
       "refills_fraction", "too_long", "too_many", "too_big", "not_json", "object", "empty",
       "duplicate_member", "duplicate_id", "deep"]


@pytest.mark.parametrize("name", BAD)
def test_malformed_details_are_refused_at_the_push(prescriber, client, name):
    rp = make_client()
    params, _ = signing_params(rp, _bad(name))
    pushed = push(client, rp, params)
    assert pushed.status_code == 400, pushed.text
    assert pushed.get_json()["error"] == "invalid_authorization_details", pushed.text
    assert "Traceback" not in pushed.text
    assert ceremonies() == 0


def test_details_beyond_the_web_bound_are_refused_before_parsing(prescriber, client):
    rp = make_client()
    params, _ = signing_params(rp, json.dumps(TWO) + " " * 10000)
    pushed = push(client, rp, params)
    assert pushed.status_code in (400, 413) and pushed.get_json()["error"] == "invalid_request"
    assert ceremonies() == 0


def test_malformed_details_in_a_signed_object_are_refused(prescriber, client):
    rp = make_keyed_client(scope="openid profile roles")
    params, _ = authorization_params(rp, scope="openid profile roles", acr_values=EPCS,
                                     max_age="0", binding_message=RX)
    token = request_object(rp, {**params, "authorization_details": _bad("wrong_type")})
    response = client.get("/authorize?" + urlencode({"client_id": rp.client_id,
                                                     "request": token}))
    got = query(response.headers["Location"])
    assert got["error"] == "invalid_authorization_details"
    assert ceremonies() == 0


def test_details_without_the_epcs_acr_are_refused(prescriber, client):
    rp = make_client()
    params, _ = authorization_params(rp, scope="openid profile",
                                     authorization_details=json.dumps(TWO))
    pushed = push(client, rp, params)
    assert pushed.status_code == 400 and pushed.get_json()["error"] == "invalid_request"


def test_the_finished_ceremony_serves_only_the_details_it_showed(prescriber, client):
    """The ceremony is bound to what it showed: a finished ceremony is not used for a request
    of the same key with other details (the hash is compared)."""
    rp = make_client()
    params, verifier = signing_params(rp)
    uri = push(client, rp, params).get_json()["request_uri"]
    location = authorize_pushed(client, rp, uri).headers["Location"]
    ceremony_password(client, location)
    _, back = hardware_step(client, prescriber)
    row = db.session.execute(select(EpcsCeremony)).scalar_one()
    row.details_sha256 = rx.sha256(TWO[:1])  # as if signed for other prescriptions
    db.session.commit()
    answer = client.get(back)
    got = query(answer.headers["Location"])
    assert got["error"] == "unmet_authentication_requirements"
    assert not events("authorization.code_issued")


def test_the_canonical_form_is_rfc_8785_for_the_schema_values():
    value = [{"b": "é\u2028\"\\\n", "a": 10, "type": "x"}]
    assert rx.canonical(value) == '[{"a":10,"b":"é\u2028\\"\\\\\\n","type":"x"}]'.encode()


def test_discovery_names_the_type(ctx, client):
    meta = client.get("/.well-known/openid-configuration").get_json()
    assert meta["authorization_details_types_supported"] == ["epcs_prescription"]
