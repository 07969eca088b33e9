"""The EHR's controlled-substance signing (DEA EPCS): who may start a ceremony, what the
signing request carries (pushed by PAR with the EHR's client authentication: acr_values epcs,
max_age=0, binding_message, the prescriptions as authorization_details), how the IdP's refusal
is shown, the checks on the ceremony's ID token claims and the access token's signed hash
before signing, and the transmission refused when a prescription changed after signing."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from clients.ehr import controlled
from clients.ehr.scopes import ACR_AAL2_PHR, ACR_EPCS
from idp.core.crypto import digest
from idp.demo import CLIENTS
from idp.epcs import details as idp_details
from idp.epcs import service as epcs
from idp.extensions import db
from idp.oidc.models import Client
from tests.helpers import login, make_client, make_user
from tests.integration.test_ehr_step_up import access_token, csrf
from tests.rp_helpers import RP_URL, RoutedIdp, make_rp, sign_in

RX = "RX-9002 RX-9003"


@pytest.fixture
def routed(ctx, app, monkeypatch):
    idp = RoutedIdp(app)
    monkeypatch.setattr("clients.rp.requests.post", idp.post)
    return idp


@pytest.fixture
def ehr(routed, tmp_path):
    return make_rp("ehr", tmp_path / "ehr-state", routed)


def register_ehr():
    """The EHR registered at the IdP as the demo registers it, with the EHR's test secret."""
    rp = make_client(name="EHR", client_id="ehr-test", redirect_uri=f"{RP_URL}/callback",
                     scope=CLIENTS["ehr"].scope)
    client = db.session.execute(
        db.select(Client).where(Client.client_id == rp.client_id)).scalar_one()
    client.client_secret_hash = digest("rp-secret")
    db.session.commit()
    return rp


def signed_in_ehr(ehr, **token_args):
    http = ehr.test_client()
    sign_in(http, sub="sub-1", sid="sid-1", roles=token_args.get("roles", ("physician",)),
            access_token=access_token(**token_args))
    return http


def expected_details() -> list[dict]:
    from clients.ehr import data
    return controlled_details(data)


def controlled_details(data) -> list[dict]:
    user = {"name": "Ana Smith", "npi": "1234567893"}
    rows = [{**d, "patient": "Eleanor Whitfield", "address": data.PATIENT_ADDRESSES[d["mrn"]]}
            for d in data.CONTROLLED_DRAFTS]
    return controlled.authorization_details(rows, user)


def press(http):
    page = http.get("/prescriptions/controlled/")
    assert page.status_code == 200, page.text
    return page, http.post("/prescriptions/controlled/",
                           data={"csrf_token": csrf(page.text)})


def test_without_the_entitlement_the_ehr_refuses_before_any_ceremony(ehr):
    http = signed_in_ehr(ehr, acr=ACR_AAL2_PHR)
    page, response = press(http)
    assert "does not hold the EPCS permission" in page.text
    assert "<button" not in page.text.split('id="controlled-prescription"')[1]
    assert response.status_code == 403 and "Location" not in response.headers


def test_a_holder_is_sent_to_a_fresh_epcs_ceremony_with_the_prescriptions_pushed(ehr, routed):
    register_ehr()
    http = signed_in_ehr(ehr, acr=ACR_AAL2_PHR, entitlements=["epcs"])
    page, response = press(http)
    assert "Fictionalcodone" in page.text and "Imaginazepam" in page.text
    assert response.status_code == 302, response.text
    location = parse_qs(urlsplit(response.headers["Location"]).query)
    assert set(location) == {"client_id", "request_uri"}  # only the reference travels
    [sent] = routed.posted
    assert sent["acr_values"] == ACR_EPCS and sent["max_age"] == "0"
    assert sent["binding_message"] == RX and sent["code_challenge_method"] == "S256"
    assert "nonce" in sent and "client_secret" not in sent
    details = json.loads(sent["authorization_details"])
    assert [d["prescription_id"] for d in details] == ["RX-9002", "RX-9003"]
    assert details[0]["prescriber"]["dea_number"] == "AR1234563"
    idp_details.parse(sent["authorization_details"])  # valid for the IdP's schema


def test_the_idps_refusal_names_what_is_missing(ehr, client):
    user = make_user()
    register_ehr()
    item = epcs.propose(user, make_user("admin.one", npi=None, role="admin"))
    epcs.approve(item, make_user("admin.two", npi=None, role="admin"))
    db.session.commit()
    login(client)  # password + authenticator app only
    http = signed_in_ehr(ehr, acr=ACR_AAL2_PHR, entitlements=["epcs"])
    _, to_idp = press(http)
    target = urlsplit(to_idp.headers["Location"])
    answer = client.get(f"{target.path}?{target.query}")
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{RP_URL}/callback"
    page = http.get(f"{location.path}?{location.query}")
    assert page.status_code == 403
    assert "Controlled-substance signing refused" in page.text
    assert "no security key enrolled for prescribing" in page.text
    assert "unmet_authentication_requirements" not in page.text
    assert 'id="signed"' not in http.get("/prescriptions/controlled/").text


def result(reference: str = RX, **claims) -> dict:
    """What the callback leaves after a ceremony: the carried reference and the ID token's
    claims (a claim given as None is left out)."""
    now = int(time.time())
    base = {"sub": "sub-1", "acr": ACR_EPCS, "amr": ["pwd", "hwk", "user", "mfa"],
            "auth_time": now, "entitlements": ["epcs"], "roles": ["physician"], "iat": now}
    base.update(claims)
    return {"carry": {"reference": reference, "started_at": now - 20,
                      "sha256": controlled.details_sha256(expected_details())},
            "claims": {k: v for k, v in base.items() if v is not None}}


def signature(details: list[dict]) -> dict:
    """What the IdP puts in the ceremony's access token."""
    return {"authorization_details": details,
            "epcs_signature": {"sha256": idp_details.sha256(details),
                               "canonicalization": "RFC8785"}}


def complete(ehr, outcome: dict, signed: dict | None = None):
    http = signed_in_ehr(ehr, acr=ACR_EPCS, entitlements=["epcs"],
                         **(signature(expected_details()) if signed is None else signed))
    with http.session_transaction() as session:
        session["step_up_result"] = outcome
    return http, http.get("/prescriptions/controlled/complete")


def test_a_good_ceremony_signs_once(ehr):
    http, page = complete(ehr, result())
    assert page.status_code == 200, page.text
    assert f"{RX} signed by Ana Smith" in page.text
    assert idp_details.sha256(expected_details()) in page.text
    assert ACR_EPCS in page.text and "pwd hwk" in page.text
    again = http.get("/prescriptions/controlled/complete")
    assert again.status_code == 403 and "no signing ceremony was completed" in again.text


@pytest.mark.parametrize("claims, reason", [
    ({"acr": ACR_AAL2_PHR}, "not an EPCS signing ceremony"),
    ({"amr": ["pwd", "otp", "mfa"]}, "did not use a security key"),
    ({"amr": ["hwk", "user"]}, "did not use a security key"),          # no second category
    ({"amr": ["pwd", "sms", "mfa"]}, "did not use a security key"),
    ({"auth_time": int(time.time()) - 3600}, "not fresh"),               # an old sign-in
    ({"auth_time": None}, "not fresh"),
    ({"entitlements": None}, "does not hold the EPCS permission"),
    ({"roles": ["admin_staff"]}, "only physicians and nurse practitioners"),
    ({"reference": "RX-0001"}, "for another prescription"),
])
def test_the_ceremony_claims_are_checked_before_signing(ehr, claims, reason):
    _, page = complete(ehr, result(**claims))
    assert page.status_code == 403 and reason in page.text
    assert 'id="signed"' not in page.text


def test_signing_pages_need_a_session_and_csrf(ehr):
    anonymous = ehr.test_client()
    assert anonymous.get("/prescriptions/controlled/").status_code == 302
    assert anonymous.get("/prescriptions/controlled/complete").status_code == 302
    http = signed_in_ehr(ehr, acr=ACR_AAL2_PHR, entitlements=["epcs"])
    assert http.post("/prescriptions/controlled/").status_code == 400


def test_the_ehr_hashes_as_the_idp_does():
    from clients.ehr import data
    details = controlled_details(data)
    assert controlled.details_sha256(details) == idp_details.sha256(details)


@pytest.mark.parametrize("signed", [
    {},                                                          # no signature in the token
    {"authorization_details": [], "epcs_signature": {"sha256": "0" * 64}},
    "other",                                                     # other prescriptions signed
])
def test_a_token_without_the_sent_prescriptions_does_not_sign(ehr, signed):
    if signed == "other":
        other = expected_details()[:1]
        signed = signature(other)
    _, page = complete(ehr, result(), signed)
    assert page.status_code == 403 and 'id="signed"' not in page.text
    assert "did not sign the prescriptions this EHR sent" in page.text


def transmit(http):
    page = http.get("/prescriptions/controlled/")
    return http.post("/prescriptions/controlled/transmit",
                     data={"csrf_token": csrf(page.text)})


def test_transmission_sends_what_was_signed_once(ehr):
    http, page = complete(ehr, result())
    sent = transmit(http)
    assert sent.status_code == 200 and 'id="transmitted"' in sent.text
    again = transmit(http)
    assert again.status_code == 409 and "no signature waiting" in again.text


def test_a_prescription_changed_after_signing_is_not_transmitted(ehr):
    http, page = complete(ehr, result())
    assert page.status_code == 200
    changed = http.post("/prescriptions/controlled/edit", data={
        "csrf_token": csrf(page.text), "prescription_id": "RX-9003",
        "quantity": "100 (one hundred) tablets"})
    assert changed.status_code == 302
    assert 'id="pending"' in http.get("/prescriptions/controlled/").text
    refused = transmit(http)
    assert refused.status_code == 409 and 'id="transmitted"' not in refused.text
    assert "changed after they were signed" in refused.text
    assert "100 (one hundred) tablets" in refused.text


def test_an_edit_is_bounded(ehr):
    http = signed_in_ehr(ehr, acr=ACR_AAL2_PHR, entitlements=["epcs"])
    page = http.get("/prescriptions/controlled/")
    for form in ({"prescription_id": "RX-0000", "quantity": "1"},
                 {"prescription_id": "RX-9002", "quantity": "x" * 101},
                 {"prescription_id": "RX-9002", "quantity": " "}):
        response = http.post("/prescriptions/controlled/edit",
                             data={"csrf_token": csrf(page.text), **form})
        assert response.status_code == 400
