"""The EHR's API (clients/ehr) and DPoP-bound access tokens from the IdP: accepted only with a
proof by the bound key for this very request (RFC 9449 §7); every other use is refused."""

from __future__ import annotations

import pytest

from tests.fapi_support import ISSUER, dpop_proof, new_key
from tests.helpers import get_code, login, make_client, make_user
from tests.rp_helpers import RP_URL, RoutedIdp, make_rp

PATIENTS = f"{RP_URL}/api/patients"  # the EHR's public URL (EHR_URL), not the Host header
SCOPE = "openid roles ehr.patients.read"


@pytest.fixture
def ehr_api(ctx, app, tmp_path):
    audience = "http://127.0.0.1:8002"  # policies/scopes.toml [resources.ehr]
    return make_rp("ehr", tmp_path / "ehr-state", RoutedIdp(app),
                   EHR_AUDIENCE=audience).test_client()


def tokens(client, key=None):
    make_user()
    assert login(client).status_code == 302
    rp = make_client(public=True, scope=SCOPE)
    code, verifier, _ = get_code(client, rp, scope=SCOPE)
    headers = {"DPoP": dpop_proof(key, "POST", f"{ISSUER}/token")} if key else {}
    answer = client.post("/token", headers=headers, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
        "code_verifier": verifier, "client_id": rp.client_id})
    assert answer.status_code == 200, answer.text
    return answer.get_json()["access_token"]


def call(api, token, proof=None, scheme="DPoP"):
    headers = {"Authorization": f"{scheme} {token}"}
    if proof:
        headers["DPoP"] = proof
    return api.get("/api/patients", headers=headers)


def challenge(response) -> str:
    assert response.status_code == 401
    return response.headers["WWW-Authenticate"]


def test_the_ehr_accepts_a_bound_token_only_with_its_proof(client, ehr_api):
    key = new_key()
    access = tokens(client, key)
    ok = call(ehr_api, access, dpop_proof(key, "GET", PATIENTS, access_token=access))
    assert ok.status_code == 200, ok.text
    assert 'DPoP' in challenge(call(ehr_api, access))
    assert 'error="invalid_dpop_proof"' in challenge(call(ehr_api, access))
    assert 'error="invalid_token"' in challenge(call(ehr_api, access, scheme="Bearer"))
    other = new_key()
    assert 'error="invalid_token"' in challenge(
        call(ehr_api, access, dpop_proof(other, "GET", PATIENTS, access_token=access)))
    proof = dpop_proof(key, "GET", PATIENTS, access_token=access)
    assert call(ehr_api, access, proof).status_code == 200
    assert 'error="invalid_dpop_proof"' in challenge(call(ehr_api, access, proof))  # replay
    for bad in (dpop_proof(key, "POST", PATIENTS, access_token=access),
                dpop_proof(key, "GET", f"{RP_URL}/api/labs", access_token=access),
                dpop_proof(key, "GET", "http://ehr.other.example/api/patients",
                           access_token=access),
                dpop_proof(key, "GET", PATIENTS, access_token=access, iat_offset=-600),
                dpop_proof(key, "GET", PATIENTS),  # no ath
                dpop_proof(key, "GET", PATIENTS, access_token="another token")):
        assert 'error="invalid_dpop_proof"' in challenge(call(ehr_api, access, bad))


def test_a_bearer_token_stays_a_bearer_token(client, ehr_api):
    access = tokens(client)
    assert call(ehr_api, access, scheme="Bearer").status_code == 200
    key = new_key()
    refused = call(ehr_api, access, dpop_proof(key, "GET", PATIENTS, access_token=access))
    assert 'error="invalid_token"' in challenge(refused)
