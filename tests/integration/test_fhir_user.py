"""fhirUser resolved, not assumed: the IdP asks the EHR's FHIR server (as a SMART backend
service) for the Practitioner with the clinician's NPI and names that resource's logical id;
a missing or ambiguous match releases no fhirUser and warns the operator."""
# ruff: noqa: F811  (the SMART and onboarding fixtures are imported, then used by name)

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.oidc.models import AccessTokenRecord
from idp.smart import practitioners
from idp.smart.models import PractitionerLink
from tests.helpers import csrf_from, exchange, login, make_user, query
from tests.integration.test_onboarding import NPI as APPLICANT_NPI
from tests.integration.test_onboarding import (  # noqa: F401  (fixture)
    _applied_and_verified,
    _reviewer,
    facility,
)
from tests.integration.test_smart import (  # noqa: F401  (the fixture, used by name)
    FHIR_BASE,
    NPI,
    _app_rp,
    _authorize,
    _consent,
    _ehr_secret,
    _register_launch,
    _verify,
    stack,
)

IDP = str(Path(sys.executable).parent / "idp")
DEMO_ID = "pr-5f1c9a2e"   # the demo EHR's Practitioner for NPI 1234567893 (clients/ehr/data.py)


def _fhir_user_of_a_launch(client, stack) -> dict:
    launch = _register_launch(client, secret=_ehr_secret(stack)).get_json()["launch"]
    response, _params, verifier = _authorize(client, _app_rp(), "openid fhirUser launch "
                                             "patient/Patient.rs", launch=launch, aud=FHIR_BASE)
    code = query(_consent(client, response).headers["Location"])["code"]
    body = exchange(client, _app_rp(), code, verifier).get_json()
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    return {"id_token": _verify(client, body["id_token"]), "userinfo": info.get_json()}


def test_a_unique_match_names_the_practitioner_by_its_logical_id(stack, client):
    user = make_user(npi=NPI)
    found = practitioners.resolve(user)
    assert (found.status, found.practitioner_id, found.warning) == ("resolved", DEMO_ID, None)
    assert DEMO_ID != NPI
    # asked as a backend service, with the NPI identifier, through the FHIR API
    calls = [url for method, url in stack["router"].calls if "/Practitioner" in url]
    assert calls == [f"{FHIR_BASE}/Practitioner?identifier=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid"
                     f"%2Fus-npi%7C{NPI}"]
    record = db.session.execute(select(AccessTokenRecord).where(
        AccessTokenRecord.client_id == practitioners.DIRECTORY_CLIENT_ID)).scalar_one()
    assert record.user_id is None and record.scope == "system/Practitioner.rs"
    assert record.revoked_at is not None   # used once, revoked right after
    login(client)
    got = _fhir_user_of_a_launch(client, stack)
    assert got["id_token"]["fhirUser"] == f"{FHIR_BASE}/Practitioner/{DEMO_ID}"
    assert got["userinfo"]["fhirUser"] == f"{FHIR_BASE}/Practitioner/{DEMO_ID}"


def test_approval_resolves_the_new_clinician(app, stack, client, mailbox, facility):
    stack["ehr"].extensions["ehr.practitioners"] = [
        {"id": "pr-9d3e6b70", "npi": APPLICANT_NPI, "name": "Maria Lopez"}]
    item = _applied_and_verified(client, mailbox, facility)
    verifier = _reviewer(app)
    page = verifier.get(f"/admin/verifications/{item.id}")
    response = verifier.post(f"/admin/verifications/{item.id}/approve", data={
        "role": "nurse_practitioner", "facility_id": str(facility.id),
        "department_id": str(facility.departments[0].id), "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302
    db.session.expire_all()
    user = db.session.execute(select(User).where(User.npi == APPLICANT_NPI)).scalar_one()
    assert practitioners.fhir_user(user) == f"{FHIR_BASE}/Practitioner/pr-9d3e6b70"


def test_an_ambiguous_match_releases_no_fhir_user_and_warns(stack, client, caplog):
    stack["ehr"].extensions["ehr.practitioners"] = [
        {"id": "pr-aaaa1111", "npi": NPI, "name": "Alex Rivera"},
        {"id": "pr-bbbb2222", "npi": NPI, "name": "A. Rivera (duplicate record)"},
        {"id": "pr-cccc3333", "npi": "9876543213", "name": "Sam Chen"}]
    user = make_user(npi=NPI)
    with caplog.at_level(logging.WARNING, logger="idp.smart.practitioners"):
        found = practitioners.resolve(user)
    assert (found.status, found.matches, found.practitioner_id) == ("ambiguous", 2, None)
    assert "2 Practitioners share NPI 1234567893" in caplog.text
    from idp.security.models import SecurityAlert

    alert = db.session.execute(select(SecurityAlert)).scalar_one()   # the admin console's
    assert (alert.kind, alert.user_id, alert.detail["matches"]) == \
        ("fhir_user_unresolved", user.id, 2)
    practitioners.resolve(user)   # the same answer tomorrow: no second alert
    assert len(db.session.execute(select(SecurityAlert)).scalars().all()) == 1
    login(client)
    got = _fhir_user_of_a_launch(client, stack)
    assert "fhirUser" not in got["id_token"] and "fhirUser" not in got["userinfo"]


def test_a_missing_match_releases_no_fhir_user_and_warns(stack, client, caplog):
    stack["ehr"].extensions["ehr.practitioners"] = [
        {"id": "pr-cccc3333", "npi": "9876543213", "name": "Sam Chen"}]
    user = make_user(npi=NPI)
    with caplog.at_level(logging.WARNING, logger="idp.smart.practitioners"):
        found = practitioners.resolve(user)
    assert (found.status, found.matches) == ("missing", 0)
    assert "no Practitioner with NPI 1234567893" in caplog.text
    login(client)
    assert "fhirUser" not in _fhir_user_of_a_launch(client, stack)["id_token"]


def test_a_match_that_goes_away_takes_fhir_user_with_it(stack, client):
    """Nightly: the resolution follows the FHIR server; a server down keeps the last answer."""
    before = db.session.scalar(select(func.coalesce(func.max(AuditEvent.seq), 0)))
    user = make_user(npi=NPI)
    assert practitioners.resolve(user).status == "resolved"
    stack["ehr"].extensions["ehr.practitioners"] = []
    assert [r.status for r in practitioners.resolve_all()] == ["missing"]
    assert practitioners.fhir_user(user) is None
    stack["ehr"].extensions["ehr.practitioners"] = None   # the directory again
    assert practitioners.resolve(user).status == "resolved"

    def down(url, **_):
        import requests

        raise requests.ConnectionError("refused")
    found = practitioners.resolve(user, down)
    assert found.status == "unavailable" and found.practitioner_id == DEMO_ID
    assert practitioners.fhir_user(user) == f"{FHIR_BASE}/Practitioner/{DEMO_ID}"
    link = db.session.get(PractitionerLink, user.id)
    assert link.last_error == "ConnectionError"
    # this test's events, in chain order (rows are not ordered without ORDER BY: PostgreSQL)
    events = db.session.execute(select(AuditEvent.detail).where(
        AuditEvent.event == "smart.practitioner_resolved", AuditEvent.user_id == user.id,
        AuditEvent.seq > before).order_by(AuditEvent.seq)).scalars().all()
    assert [e["status"] for e in events] == ["resolved", "missing", "resolved"]


def test_a_changed_npi_is_not_named_until_resolved_again(stack):
    user = make_user(npi=NPI)
    practitioners.resolve(user)
    user.npi = "9876543213"
    db.session.commit()
    assert practitioners.fhir_user(user) is None
    assert practitioners.resolve(user).practitioner_id == "pr-0b77d4c1"


def test_a_server_answering_nonsense_is_unavailable_not_a_match(stack):
    user = make_user(npi=NPI)

    class Answer:
        status_code = 200
        content = json.dumps({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Practitioner", "id": "../../admin",
                          "identifier": [{"system": practitioners.NPI_SYSTEM,
                                          "value": NPI}]}}]}).encode()

    found = practitioners.resolve(user, lambda url, **_: Answer())
    assert found.status == "unavailable" and practitioners.fhir_user(user) is None

    class Other(Answer):   # a match the server returned that does not carry the NPI
        content = json.dumps({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Practitioner", "id": "pr-x",
                          "identifier": [{"system": practitioners.NPI_SYSTEM,
                                          "value": "9876543213"}]}}]}).encode()

    assert practitioners.resolve(user, lambda url, **_: Other()).status == "missing"


def test_the_ehr_refuses_practitioner_search_without_a_token(stack):
    ehr = stack["ehr"].test_client()
    assert ehr.get(f"{FHIR_BASE}/Practitioner").status_code == 401
    assert ehr.get(f"{FHIR_BASE}/Practitioner/{DEMO_ID}").status_code == 401
    forged = ehr.get(f"{FHIR_BASE}/Practitioner", headers={"Authorization": "Bearer x.y.z"})
    assert forged.status_code == 401 and forged.mimetype == "application/fhir+json"


def test_nightly_command_warns_about_unresolved_clinicians(env, ctx):
    """The real command: the FHIR server (the EHR at 127.0.0.1:8002) is not running here, so
    every clinician is unavailable: a warning each, exit 1."""
    make_user(npi=NPI)
    make_user(username="nochen", npi=None)
    result = subprocess.run([IDP, "smart", "resolve-practitioners", "--json"],
                            env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    rows = json.loads(result.stdout)
    assert [(r["username"], r["status"]) for r in rows] == [("drsmith", "unavailable")]
    assert "warning: drsmith: the FHIR server could not be asked" in result.stderr
