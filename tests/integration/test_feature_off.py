"""A feature switched off in policy leaves no trace: SMART with `enabled = false` in
policies/smart.toml (here a policy override) is not installed by create_app, so the IdP built
that way has no SMART route, document, scope, claim or launch context. Each assertion is set
against the SMART-on IdP of the test session (same database, same keys)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from idp import create_app
from idp.config import Settings
from idp.oidc.authorize import request_key
from idp.smart import practitioners
from idp.smart.interaction import PICKS
from tests.conftest import TEST_ISSUER, TEST_POLICY, ClosingClient
from tests.helpers import auth_params, basic, exchange, login, make_client, make_user, pkce, query

SMART_SCOPES = {"fhirUser", "launch", "launch/patient", "launch/encounter"}
FHIR_AUDIENCE = "http://127.0.0.1:8002"  # policies: smart.toml resource "ehr"
SCOPE = "openid profile roles fhirUser launch/patient patient/*.rs offline_access"


@pytest.fixture(scope="module")
def smart_off(app, env):
    """The IdP with SMART off, on the session's database (its migrations already applied)."""
    off = create_app(Settings.from_env(env),
                     policy_overrides={**TEST_POLICY, "smart": {"enabled": False}})
    off.config["TESTING"] = True
    off.test_client_class = ClosingClient
    return off


def _fhir_server_knowing(npi: str, practitioner_id: str):
    """The EHR's FHIR server answering the Practitioner search for this NPI."""
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
        "resourceType": "Practitioner", "id": practitioner_id,
        "identifier": [{"system": practitioners.NPI_SYSTEM, "value": npi}]}}]}
    return lambda url, **_: SimpleNamespace(status_code=200,
                                            content=json.dumps(bundle).encode())


def _claims(http, token: str) -> dict:
    keys = KeySet.import_key_set(http.get("/jwks.json").get_json())
    return jwt.decode(token, keys, algorithms=["RS256", "ES256"]).claims


def test_no_smart_route(app, smart_off):
    def smart_routes(application) -> set[str]:
        return {r.endpoint for r in application.url_map.iter_rules()
                if r.endpoint.startswith("smart.")}

    assert smart_routes(app) >= {"smart.configuration", "smart.register_launch",
                                 "smart.pick_patient", "smart.style"}
    assert smart_routes(smart_off) == set()
    for path in ("/.well-known/smart-configuration", "/smart/style.json"):
        assert app.test_client().get(path).status_code == 200
        assert smart_off.test_client().get(path).status_code == 404
    assert smart_off.test_client().post("/smart/launch", data={}).status_code == 404


def test_discovery_offers_no_smart_scope_or_claim(app, smart_off):
    on = app.test_client().get("/.well-known/openid-configuration").get_json()
    off = smart_off.test_client().get("/.well-known/openid-configuration").get_json()
    assert SMART_SCOPES <= set(on["scopes_supported"]) and "fhirUser" in on["claims_supported"]
    assert not SMART_SCOPES & set(off["scopes_supported"])
    assert "fhirUser" not in off["claims_supported"]
    assert not any("smart" in key or "capabilit" in key for key in off)
    assert set(on["scopes_supported"]) - set(off["scopes_supported"]) == SMART_SCOPES


def test_smart_scopes_are_unknown(app, smart_off):
    with app.app_context():
        make_user()
        rp = make_client(scope=SCOPE, first_party=True)  # registered while SMART was on
    _, challenge = pkce()
    for scope in ("openid launch/patient", "openid patient/*.rs", "openid fhirUser"):
        browser = smart_off.test_client()
        answer = browser.get("/authorize?" + urlencode(auth_params(rp, challenge, scope=scope)))
        assert answer.status_code == 302
        assert query(answer.headers["Location"])["error"] == "invalid_scope", scope
    with smart_off.app_context():
        from idp.oidc.clients import ClientError, create_client

        with pytest.raises(ClientError, match="unknown"):
            create_client(name="SMART app", redirect_uris=["https://app.example/cb"],
                          scope="openid launch/patient")


def test_tokens_carry_no_fhir_user_and_no_launch_context(app, smart_off):
    """A standalone launch made while SMART was on (patient P-9 picked): the SMART-on IdP puts
    the patient beside and inside its tokens, the SMART-off one refreshes the same grant
    without any of it; its own sign-ins release no fhirUser."""
    with app.app_context():
        user = make_user()  # a clinician with an NPI: fhirUser would name her
        subject = user.subject
        practitioners.resolve(user, _fhir_server_knowing(user.npi, "pr-1"))
        rp = make_client(scope=SCOPE, first_party=True)
    browser = app.test_client()
    assert login(browser).status_code == 302
    verifier, challenge = pkce()
    params = auth_params(rp, challenge, scope=SCOPE)
    query_string = urlencode(params)
    with browser.session_transaction() as flow:  # the patient picker's choice
        flow[PICKS] = {request_key(query_string): {"patient": "P-9", "sub": subject}}
    answer = browser.get("/authorize?" + query_string)
    code = query(answer.headers["Location"])["code"]
    launched = exchange(browser, rp, code, verifier).get_json()
    assert launched["patient"] == "P-9"
    on_claims = _claims(browser, launched["access_token"])
    assert on_claims["patient"] == "P-9" and on_claims["aud"] == FHIR_AUDIENCE
    assert _claims(browser, launched["id_token"])["fhirUser"].endswith("/Practitioner/pr-1")

    refresh = {"grant_type": "refresh_token", "refresh_token": launched["refresh_token"]}
    off_http = smart_off.test_client()
    refreshed = off_http.post("/token", data=refresh, headers=basic(rp))
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.get_json()
    assert not {"patient", "encounter", "need_patient_banner", "smart_style_url"} & set(body)
    claims = _claims(off_http, body["access_token"])
    assert not {"patient", "encounter", "fhirUser"} & set(claims)
    assert claims["aud"] == TEST_ISSUER  # the clinical scope names no resource any more
    # the same grant refreshed by the SMART-on IdP still carries its patient
    again = app.test_client().post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"]}).get_json()
    assert again["patient"] == "P-9"

    # a sign-in at the SMART-off IdP: no fhirUser in the ID token or at userinfo
    off_browser = smart_off.test_client()
    assert login(off_browser).status_code == 302
    verifier, challenge = pkce()
    answer = off_browser.get("/authorize?" + urlencode(
        auth_params(rp, challenge, scope="openid profile roles")))
    code = query(answer.headers["Location"])["code"]
    tokens = exchange(off_browser, rp, code, verifier).get_json()
    assert "fhirUser" not in _claims(off_browser, tokens["id_token"])
    info = off_browser.get("/userinfo", headers={
        "Authorization": f"Bearer {tokens['access_token']}"}).get_json()
    assert info["sub"] == subject and "fhirUser" not in info


def test_scim_off_has_no_route(app, env):
    """policies/scim.toml `enabled = false`: no /scim/v2 route at all."""
    off = create_app(Settings.from_env(env),
                     policy_overrides={**TEST_POLICY, "scim": {"enabled": False}})
    assert any(r.endpoint.startswith("scim.") for r in app.url_map.iter_rules())
    assert not any(r.endpoint.startswith("scim.") for r in off.url_map.iter_rules())
    assert off.test_client().get("/scim/v2/ServiceProviderConfig").status_code == 404
