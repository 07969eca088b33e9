"""Resource scopes and machine clients are granted, not self-served (issue 18).

A client registered at /register gets at once only policies/scopes.toml [grants]
self_service_scopes and self_service_grant_types; clinical scopes, client_credentials and
introspect-any wait for an admin (console or `idp clients approve`), audited. An RFC 7592 PUT
cannot escalate. A client_credentials token never carries a user-level clinical scope, whatever
the client's registration, on the Flask path and the fast lane alike."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from idp.admin import service
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.oidc.models import AccessTokenRecord, Client
from tests.helpers import (
    Rp,
    authorize,
    basic,
    csrf_from,
    exchange,
    login,
    make_client,
    make_user,
    pkce,
    query,
)

MACHINE = {"client_name": "Lab feed", "redirect_uris": ["https://lab.example/cb"],
           "grant_types": ["authorization_code", "client_credentials"],
           "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic",
           "scope": "openid profile ehr.patients.read system/Patient.rs",
           "introspect_any": True}


def _initial() -> str:
    issued = service.issue_initial_token(actor="test", lifetime=3600, uses=5)
    db.session.commit()
    return issued.token


def _register(http, body: dict) -> dict:
    response = http.post("/register", json=body,
                         headers={"Authorization": f"Bearer {_initial()}"})
    assert response.status_code == 201, response.text
    return response.get_json()


def _row(client_id: str) -> Client:
    db.session.expire_all()
    return db.session.execute(select(Client).where(Client.client_id == client_id)).scalar_one()


def _events(name: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name)
                                   .order_by(AuditEvent.seq)).scalars())


def _records() -> int:
    return db.session.execute(select(func.count()).select_from(AccessTokenRecord)).scalar_one()


def _cc(http, doc: dict, scope: str | None = "system/Patient.rs"):
    data = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
    return http.post("/token", data=data, headers=basic(Rp(doc["client_id"],
                                                           doc["client_secret"], "")))


def _admin(role: str = "admin", username: str = "root.admin"):
    """A signed-in console user (aal2, recent) of `role` in a browser of its own."""
    from flask import current_app

    make_user(username, npi=None, role=role, given_name="Ada", family_name="Root")
    browser = current_app.test_client()
    assert login(browser, username).status_code == 302
    return browser


def _decide(browser, client_id: str, decision: str, csrf: bool = True):
    token = csrf_from(browser.get("/admin/clients").text) if csrf else None
    data = {"csrf_token": token} if token else {}
    return browser.post(f"/admin/clients/{client_id}/{decision}", data=data)


def test_clinical_scopes_and_client_credentials_wait_for_an_admin(ctx, client):
    doc = _register(client, MACHINE)
    # granted now: the self-service part; the rest is reported as pending
    assert doc["scope"] == "openid profile" and doc["grant_types"] == ["authorization_code"]
    assert doc["approval_status"] == "pending"
    assert doc["pending_scope"] == "ehr.patients.read system/Patient.rs"
    assert doc["pending_grant_types"] == ["client_credentials"]
    assert doc["pending_introspect_any"] is True and "introspect_any" not in doc
    row = _row(doc["client_id"])
    assert row.scope == "openid profile" and row.grant_types == ["authorization_code"]
    assert not row.introspect_any and row.pending and row.pending_since is not None
    [asked] = _events("client.grants_requested")
    assert asked.client_id == doc["client_id"] and asked.actor.startswith("registration:")
    assert asked.detail == {"scope": "ehr.patients.read system/Patient.rs",
                            "grant_types": ["client_credentials"], "introspect_any": True}
    read = client.get(f"/register/{doc['client_id']}", headers={
        "Authorization": f"Bearer {doc['registration_access_token']}"}).get_json()
    assert read["approval_status"] == "pending" and read["scope"] == "openid profile"

    # before approval: no machine token, whatever the scope; nothing issued
    for scope in ("system/Patient.rs", None):
        refused = _cc(client, doc, scope)
        assert refused.status_code == 400 and refused.get_json()["error"] == \
            "unauthorized_client"
    assert _records() == 0 and not _events("token.issued")

    admin = _admin()
    listing = admin.get("/admin/clients")
    assert f'id="pending-{doc["client_id"]}"' in listing.text and "Pending approval" in listing.text
    assert "ehr.patients.read system/Patient.rs" in listing.text
    page = admin.get(f"/admin/clients/{doc['client_id']}")
    assert "Pending approval" in page.text and "client_credentials" in page.text
    done = _decide(admin, doc["client_id"], "approve")
    assert done.status_code == 302 and "decided=approved" in done.headers["Location"]
    [approved] = _events("client.grants_approved")
    assert approved.actor.startswith("admin:") and approved.client_id == doc["client_id"]
    assert approved.detail == asked.detail
    row = _row(doc["client_id"])
    assert row.scope == "openid profile ehr.patients.read system/Patient.rs"
    assert row.grant_types == ["authorization_code", "client_credentials"]
    assert row.introspect_any and not row.pending and row.pending_since is None
    assert f'id="pending-{doc["client_id"]}"' not in admin.get("/admin/clients").text

    # after approval (the cached client was replaced at once): a system/ token for the EHR
    granted = _cc(client, doc)
    assert granted.status_code == 200, granted.text
    assert granted.get_json()["scope"] == "system/Patient.rs" and _records() == 1
    # ... but never a user-level clinical scope, approved or not
    refused = _cc(client, doc, "ehr.patients.read")
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_scope"
    assert _records() == 1
    read = client.get(f"/register/{doc['client_id']}", headers={
        "Authorization": f"Bearer {doc['registration_access_token']}"}).get_json()
    assert "approval_status" not in read and read["introspect_any"] is True
    assert read["grant_types"] == ["authorization_code", "client_credentials"]


def test_a_pending_client_uses_what_it_was_granted(ctx, client):
    doc = _register(client, MACHINE)
    rp = Rp(doc["client_id"], doc["client_secret"], MACHINE["redirect_uris"][0])
    make_user()
    assert login(client).status_code == 302
    # the pending scope is not the client's yet: invalid_scope back to the client
    refused, _ = authorize(client, rp, pkce()[1], scope="openid ehr.patients.read")
    assert query(refused.headers["Location"])["error"] == "invalid_scope"
    verifier, challenge = pkce()
    consent, params = authorize(client, rp, challenge, scope="openid profile")
    assert consent.status_code == 200  # a registered client is never first party
    allowed = client.post("/authorize?" + urlencode(params), data={
        "decision": "allow", "csrf_token": csrf_from(consent.text)})
    code = query(allowed.headers["Location"])["code"]
    tokens = exchange(client, rp, code, verifier)
    assert tokens.status_code == 200 and tokens.get_json()["scope"] == "openid profile"


def test_rejection_keeps_what_was_granted_and_drops_the_request(ctx, client):
    doc = _register(client, MACHINE)
    admin = _admin()
    done = _decide(admin, doc["client_id"], "reject")
    assert done.status_code == 302 and "decided=rejected" in done.headers["Location"]
    [rejected] = _events("client.grants_rejected")
    assert rejected.actor.startswith("admin:") and rejected.detail == {
        "scope": "ehr.patients.read system/Patient.rs", "grant_types": ["client_credentials"],
        "introspect_any": True}
    row = _row(doc["client_id"])
    assert row.scope == "openid profile" and row.grant_types == ["authorization_code"]
    assert not row.pending and not row.introspect_any
    assert _cc(client, doc).get_json()["error"] == "unauthorized_client"
    # nothing left to decide: refused, nothing changes, nothing audited
    again = _decide(admin, doc["client_id"], "approve")
    assert again.status_code == 400 and "no pending request" in again.text
    assert not _events("client.grants_approved") and len(_events("client.grants_rejected")) == 1
    assert _row(doc["client_id"]).scope == "openid profile"


@pytest.mark.parametrize("role", ["physician", "security", "verifier"])
def test_only_an_admin_decides(ctx, client, role):
    doc = _register(client, MACHINE)
    other = _admin(role, username=f"{role}.user")
    for decision in ("approve", "reject"):
        token = csrf_from(other.get("/account").text)
        response = other.post(f"/admin/clients/{doc['client_id']}/{decision}",
                              data={"csrf_token": token})
        assert response.status_code == 403, (role, decision)
    anonymous = ctx.test_client()
    assert anonymous.post(f"/admin/clients/{doc['client_id']}/approve").status_code == 400
    row = _row(doc["client_id"])
    assert row.pending and row.scope == "openid profile"
    assert not _events("client.grants_approved") and not _events("client.grants_rejected")


def test_approval_needs_the_csrf_token(ctx, client):
    doc = _register(client, MACHINE)
    admin = _admin()
    for decision in ("approve", "reject"):
        assert _decide(admin, doc["client_id"], decision, csrf=False).status_code == 400
    assert _row(doc["client_id"]).pending
    assert not _events("client.grants_approved") and not _events("client.grants_rejected")
    assert admin.post("/admin/clients/no-such-client/approve", data={
        "csrf_token": csrf_from(admin.get("/admin/clients").text)}).status_code == 404


def test_an_rfc7592_update_cannot_escalate(ctx, client):
    body = {**MACHINE, "scope": "openid system/Patient.rs", "introspect_any": False}
    doc = _register(client, body)
    path = f"/register/{doc['client_id']}"
    auth = {"Authorization": f"Bearer {doc['registration_access_token']}"}
    admin = _admin()
    assert _decide(admin, doc["client_id"], "approve").status_code == 302

    def put(**change) -> dict:
        response = client.put(path, headers=auth, json={
            **body, "client_id": doc["client_id"], **change})
        assert response.status_code == 200, response.text
        return response.get_json()

    # approved values stay while still asked for; a new clinical ask waits again
    wider = put(scope="openid system/Patient.rs ehr.labs.read user/Observation.rs",
                introspect_any=True)
    assert wider["scope"] == "openid system/Patient.rs"
    assert wider["grant_types"] == ["authorization_code", "client_credentials"]
    assert wider["approval_status"] == "pending"
    assert wider["pending_scope"] == "ehr.labs.read user/Observation.rs"
    assert wider["pending_grant_types"] == [] and wider["pending_introspect_any"] is True
    assert _cc(client, doc, "user/Observation.rs").get_json()["error"] == "invalid_scope"
    assert _cc(client, doc).status_code == 200
    # a wider SMART scope than the one approved is a new ask
    widened = put(scope="openid system/*.rs")
    assert widened["scope"] == "openid" and widened["pending_scope"] == "system/*.rs"
    assert _cc(client, doc, "system/Observation.rs").get_json()["error"] == "invalid_scope"
    # dropped, then asked for again: the earlier approval does not come back
    dropped = put(scope="openid", grant_types=["authorization_code"])
    assert dropped["scope"] == "openid" and "approval_status" not in dropped
    again = put()
    assert again["scope"] == "openid" and again["grant_types"] == ["authorization_code"]
    assert again["pending_scope"] == "system/Patient.rs"
    assert again["pending_grant_types"] == ["client_credentials"]
    assert _cc(client, doc).get_json()["error"] == "unauthorized_client"
    row = _row(doc["client_id"])
    assert not row.introspect_any and "client_credentials" not in row.grant_types
    # a refused PUT changes nothing
    before = (row.scope, row.pending_scope, list(row.pending_grant_types))
    bad = client.put(path, headers=auth, json={**body, "client_id": doc["client_id"],
                                               "scope": "openid everything"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_client_metadata"
    bad = client.put(path, headers=auth, json={**body, "client_id": doc["client_id"],
                                               "introspect_any": "yes"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_client_metadata"
    row = _row(doc["client_id"])
    assert (row.scope, row.pending_scope, list(row.pending_grant_types)) == before


def test_a_self_service_registration_has_nothing_pending(ctx, client):
    doc = _register(client, {**MACHINE, "grant_types": ["authorization_code", "refresh_token"],
                             "scope": "openid profile email phone offline_access",
                             "introspect_any": False})
    assert doc["scope"] == "openid profile email phone offline_access"
    assert doc["grant_types"] == ["authorization_code", "refresh_token"]
    assert "approval_status" not in doc and "pending_scope" not in doc
    assert not _events("client.grants_requested")


def test_a_machine_only_registration_holds_nothing_until_approved(ctx, client):
    doc = _register(client, {"client_name": "Batch job", "grant_types": ["client_credentials"],
                             "scope": "system/Observation.rs"})
    assert doc["grant_types"] == [] and doc["scope"] == "" and doc["response_types"] == []
    assert doc["pending_grant_types"] == ["client_credentials"]
    assert _cc(client, doc, None).get_json()["error"] == "unauthorized_client"
    assert _decide(_admin(), doc["client_id"], "approve").status_code == 302
    assert _cc(client, doc, "system/Observation.rs").status_code == 200


@pytest.mark.parametrize("lane_on", [True, False], ids=["fast lane", "flask"])
@pytest.mark.parametrize("scope", ["ehr.patients.read", "user/Patient.rs",
                                   "patient/Observation.rs", "system/Patient.rs ehr.labs.read",
                                   "patient/*.read"])
def test_a_userless_token_never_carries_user_level_scopes(app, ctx, client, lane_on, scope):
    """Even an operator-created client registered with them cannot get them without a user."""
    service_ = make_client(name="Operator service", grant_types=["client_credentials"],
                           redirect_uri="https://svc.example/cb",
                           scope="system/Patient.rs ehr.patients.read ehr.labs.read "
                                 "user/Patient.rs patient/Observation.rs patient/*.read")
    lane = app.extensions["idp_fast_lane"]
    lane.enabled = lane_on
    try:
        ok = client.post("/token", headers=basic(service_), data={
            "grant_type": "client_credentials", "scope": "system/Patient.rs"})
        assert ok.status_code == 200, ok.text  # (teaches the lane this Host)
        served, records = lane.served, _records()
        issued = len(_events("token.issued"))
        refused = client.post("/token", headers=basic(service_), data={
            "grant_type": "client_credentials", "scope": scope})
        assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_scope"
        assert "without a user" in refused.get_json()["error_description"]
        assert lane.served == served and _records() == records
        assert len(_events("token.issued")) == issued
        again = client.post("/token", headers=basic(service_), data={
            "grant_type": "client_credentials", "scope": "system/Patient.rs"})
        assert again.status_code == 200
        assert lane.served == served + (1 if lane_on else 0)
    finally:
        lane.enabled = True


def test_operators_are_not_limited(ctx, client):
    """The CLI and the console (operators) grant what they register, at once."""
    rp = make_client(name="Operator EHR", first_party=False, introspect_any=True,
                     grant_types=["authorization_code", "client_credentials"],
                     scope="openid ehr.patients.read system/Patient.rs")
    row = _row(rp.client_id)
    assert row.scope == "openid ehr.patients.read system/Patient.rs" and not row.pending
    assert "client_credentials" in row.grant_types and row.introspect_any


def test_policy_decides_what_is_self_service(ctx, client, monkeypatch):
    """scopes.toml [grants] is data: an operator who lets `npi` be self-served gets it."""
    import dataclasses

    from idp.context import runtime

    rt = runtime()
    rules = dataclasses.replace(rt.policy.grants, self_service_scopes=("openid", "npi"),
                                self_service_grant_types=("authorization_code",
                                                          "client_credentials"))
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, grants=rules))
    doc = _register(client, {**MACHINE, "scope": "openid npi profile system/Patient.rs"})
    assert doc["scope"] == "openid npi"
    assert doc["grant_types"] == ["authorization_code", "client_credentials"]
    assert doc["pending_scope"] == "profile system/Patient.rs"


def test_cli_approves_and_rejects(app, env, monkeypatch):
    from click.testing import CliRunner

    from idp.cli import main

    with app.app_context():
        http = app.test_client()
        first = _register(http, MACHINE)
        second = _register(http, MACHINE)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    result = runner.invoke(main, ["clients", "approve", first["client_id"], "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["decision"] == "approved" and data["grant_types"] == ["client_credentials"]
    assert "system/Patient.rs" in data["scope_granted"]
    result = runner.invoke(main, ["clients", "approve", second["client_id"], "--reject"])
    assert result.exit_code == 0 and "rejected" in result.output
    again = runner.invoke(main, ["clients", "approve", first["client_id"]])
    assert again.exit_code == 2 and "nothing waits" in again.output
    with app.app_context():
        assert _row(first["client_id"]).introspect_any
        assert not _row(second["client_id"]).pending
        assert [e.actor for e in _events("client.grants_approved")] == ["cli"]
        assert [e.actor for e in _events("client.grants_rejected")] == ["cli"]
