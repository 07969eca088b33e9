"""The EHR's controlled-substance signing (DEA EPCS): who may start a ceremony, what the
signing request carries (acr_values epcs, max_age=0, binding_message), how the IdP's refusal is
shown, and the checks on the ceremony's ID token claims before signing (acr, amr, auth_time,
the EPCS entitlement, the prescription reference, one signature per ceremony)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from clients.ehr.scopes import ACR_AAL2_PHR, ACR_EPCS
from idp.demo import CLIENTS
from idp.epcs import service as epcs
from idp.extensions import db
from tests.helpers import login, make_client, make_user
from tests.integration.test_ehr_step_up import csrf, signed_in_ehr
from tests.rp_helpers import RP_URL, RoutedIdp, make_rp

RX = "RX-9002"


@pytest.fixture
def ehr(ctx, app, tmp_path):
    return make_rp("ehr", tmp_path / "ehr-state", RoutedIdp(app))


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


def test_a_holder_is_sent_to_a_fresh_epcs_ceremony_with_the_reference(ehr):
    http = signed_in_ehr(ehr, acr=ACR_AAL2_PHR, entitlements=["epcs"])
    page, response = press(http)
    assert "Fictionalcodone" in page.text and "every time" in page.text
    assert response.status_code == 302
    sent = parse_qs(urlsplit(response.headers["Location"]).query)
    assert sent["acr_values"] == [ACR_EPCS] and sent["max_age"] == ["0"]
    assert sent["binding_message"] == [RX] and sent["code_challenge_method"] == ["S256"]
    assert "nonce" in sent


def test_the_idps_refusal_names_what_is_missing(ehr, client):
    user = make_user()
    make_client(name="EHR", client_id="ehr-test", redirect_uri=f"{RP_URL}/callback",
                scope=CLIENTS["ehr"].scope)  # what the demo registers
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
    assert "no security key or biometrics set up" in page.text
    assert "unmet_authentication_requirements" not in page.text
    assert 'id="signed"' not in http.get("/prescriptions/controlled/").text


def result(reference: str = RX, **claims) -> dict:
    """What the callback leaves after a ceremony: the carried reference and the ID token's
    claims (a claim given as None is left out)."""
    now = int(time.time())
    base = {"sub": "sub-1", "acr": ACR_EPCS, "amr": ["pwd", "hwk", "user", "mfa"],
            "auth_time": now, "entitlements": ["epcs"], "roles": ["physician"], "iat": now}
    base.update(claims)
    return {"carry": {"reference": reference, "started_at": now - 20},
            "claims": {k: v for k, v in base.items() if v is not None}}


def complete(ehr, outcome: dict):
    http = signed_in_ehr(ehr, acr=ACR_EPCS, entitlements=["epcs"])
    with http.session_transaction() as session:
        session["step_up_result"] = outcome
    return http, http.get("/prescriptions/controlled/complete")


def test_a_good_ceremony_signs_once(ehr):
    http, page = complete(ehr, result())
    assert page.status_code == 200
    assert f"{RX} signed by Ana Smith" in page.text
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
