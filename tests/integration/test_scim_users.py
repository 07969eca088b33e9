"""SCIM /Users over the test client: CRUD, filters (RFC 7644 §3.4.2.2, complex and value
paths), sorting and pagination, ETags, PATCH (Entra's capitalised ops and boolean strings),
uniqueness, the clinician extension, and every bad input answered with a SCIM error that
changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.scim.models import ScimProfile
from tests.integration.scim_helpers import (
    CLINICIAN,
    NPI,
    NPI2,
    PATCH_OP,
    Scim,
    license_,
    make_token,
    user_body,
)


@pytest.fixture
def scim(ctx, client):
    return Scim(client, make_token("entra"))


def _count() -> int:
    return db.session.execute(select(func.count()).select_from(User)).scalar_one()


def _role(subject: str) -> str:
    db.session.expire_all()
    return db.session.execute(select(User.role).where(User.subject == subject)).scalar_one()


def _error(response, status: int, scim_type: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/scim+json"
    body = response.get_json(force=True)
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert body["status"] == str(status) and body["detail"]
    if scim_type:
        assert body["scimType"] == scim_type
    return body


def test_create_get_and_audit(scim):
    made = scim("POST", "/Users", user_body())
    assert made.status_code == 201, made.get_data(as_text=True)
    assert made.mimetype == "application/scim+json"
    res = made.get_json(force=True)
    assert res["userName"] == "alice@hospital.example" and res["active"] is True
    assert res["meta"]["version"] == made.headers["ETag"]
    assert made.headers["Location"].endswith(f"/scim/v2/Users/{res['id']}")
    got = scim("GET", f"/Users/{res['id']}").get_json(force=True)
    assert got == res
    user = db.session.execute(select(User).where(User.subject == res["id"])).scalar_one()
    assert user.username == "alice@hospital.example" and user.role == "admin_staff"
    assert user.department == "Cardiology"
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "scim.user_created")).scalar_one()
    assert event.actor == "scim:entra" and event.detail["token_name"] == "entra"


def test_filters_sort_and_pages(scim):
    for name in ("carol", "bob", "alice", "dave"):
        assert scim("POST", "/Users", user_body(f"{name}@hospital.example")).status_code == 201
    def names(query: str) -> list[str]:
        response = scim("GET", f"/Users?{query}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return [r["userName"] for r in response.get_json(force=True)["Resources"]]
    assert names('filter=userName eq "BOB@hospital.example"') == ["bob@hospital.example"]
    assert names('filter=emails[type eq "work" and value co "aro"]') == ["carol@hospital.example"]
    assert names('filter=emails[type eq "home"]') == []
    assert sorted(names('filter=userName sw "a" or userName ew "dave@hospital.example"')) == \
        ["alice@hospital.example", "dave@hospital.example"]
    assert names('filter=not (userName sw "c" or userName sw "a") and active eq true'
                 '&sortBy=userName') == ["bob@hospital.example", "dave@hospital.example"]
    assert names('filter=name.givenName pr&sortBy=userName&sortOrder=descending&count=2') == \
        ["dave@hospital.example", "carol@hospital.example"]
    page = scim("GET", "/Users?sortBy=userName&startIndex=3&count=1").get_json(force=True)
    assert page["totalResults"] == 4 and page["startIndex"] == 3 and page["itemsPerPage"] == 1
    assert page["Resources"][0]["userName"] == "carol@hospital.example"
    assert names('filter=externalId eq "ext-dave@hospital.example"') == ["dave@hospital.example"]
    ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"
    assert len(names(f'filter={ent} eq "E100"')) == 4


def test_patch_entra_style_and_etag(scim):
    res = scim("POST", "/Users", user_body()).get_json(force=True)
    stale = res["meta"]["version"]
    patch = {"schemas": [PATCH_OP], "Operations": [
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "al@hospital.example"},
        {"op": "Replace", "path": "name.familyName", "value": "Smith"},
        {"op": "Add", "value": {"title": "Nurse"}}]}
    done = scim("PATCH", f"/Users/{res['id']}", patch, headers={"If-Match": stale})
    assert done.status_code == 200, done.get_data(as_text=True)
    body = done.get_json(force=True)
    assert body["emails"][0]["value"] == "al@hospital.example"
    assert body["name"]["familyName"] == "Smith" and body["title"] == "Nurse"
    assert body["meta"]["version"] != stale
    again = scim("PATCH", f"/Users/{res['id']}", patch, headers={"If-Match": stale})
    _error(again, 412)
    off = scim("PATCH", f"/Users/{res['id']}", {"schemas": [PATCH_OP], "Operations": [
        {"op": "Replace", "path": "active", "value": "False"}]})
    assert off.status_code == 200 and off.get_json(force=True)["active"] is False
    user = db.session.execute(select(User).where(User.subject == res["id"])).scalar_one()
    db.session.refresh(user)
    assert user.disabled and user.email == "al@hospital.example"


def test_put_okta_active_and_delete_soft(scim):
    res = scim("POST", "/Users", user_body("okta.user@hospital.example")).get_json(force=True)
    body = user_body("okta.user@hospital.example", active=False, id=res["id"])
    put = scim("PUT", f"/Users/{res['id']}", body)
    assert put.status_code == 200 and put.get_json(force=True)["active"] is False
    assert scim("DELETE", f"/Users/{res['id']}").status_code == 204
    _error(scim("GET", f"/Users/{res['id']}"), 404)
    assert db.session.execute(select(ScimProfile)).scalar_one().deleted_at is not None
    listed = scim("GET", '/Users?filter=userName eq "okta.user@hospital.example"')
    assert listed.get_json(force=True)["totalResults"] == 0


def test_clinician_extension(scim):
    body = user_body("dr.who@hospital.example", schemas=[
        "urn:ietf:params:scim:schemas:core:2.0:User", CLINICIAN])
    body[CLINICIAN] = {"npi": NPI, "licenses": [license_()], "role": "physician"}
    res = scim("POST", "/Users", body).get_json(force=True)
    ext = res[CLINICIAN]
    assert ext["npi"] == NPI and ext["role"] == "physician" and "epcsEligible" not in ext
    asked = scim("GET", f"/Users/{res['id']}?attributes=userName,{CLINICIAN}:epcsEligible")
    assert asked.get_json(force=True)[CLINICIAN] == {"epcsEligible": True}
    assert ext["licenses"] == [license_()]
    assert _role(res["id"]) == "physician"
    found = scim("GET", f'/Users?filter={CLINICIAN}:npi eq "{NPI}"').get_json(force=True)
    assert found["totalResults"] == 1
    # No license: the clinical role waits, the account holds the pending (non-clinical) role.
    body = user_body("dr.no@hospital.example")
    body[CLINICIAN] = {"npi": NPI2, "role": "physician"}
    held = scim("POST", "/Users", body).get_json(force=True)
    assert held[CLINICIAN]["role"] == "physician"
    assert _role(held["id"]) == "admin_staff"
    assert db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "scim.clinician_pending")).scalar_one().detail["requested_role"] \
        == "physician"
    # The license arrives: the role follows.
    fix = {"schemas": [PATCH_OP], "Operations": [
        {"op": "add", "path": f"{CLINICIAN}:licenses", "value": [license_(number="B77777")]}]}
    done = scim("PATCH", f"/Users/{held['id']}", fix)
    assert done.status_code == 200, done.get_data(as_text=True)
    assert _role(held["id"]) == "physician"


@pytest.mark.parametrize(("raw", "scim_type"), [
    ('{"userName": ', "invalidSyntax"),
    ('[1, 2]', "invalidSyntax"),
    ('{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x1x", '
     '"shoeSize": 44}', "invalidSyntax"),
    ('{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": 12}',
     "invalidValue"),
    ('{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "bad name!", '
     '"emails": [{"value": "a@hospital.example"}]}', "invalidValue"),
    ('{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x"}',
     "invalidValue"),
    ('{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "' + CLINICIAN + '"], '
     '"userName": "npi.bad", "emails": [{"value": "a@hospital.example"}], "' + CLINICIAN +
     '": {"npi": "1234567890"}}', "invalidValue"),
    ('{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "' + CLINICIAN + '"], '
     '"userName": "role.bad", "emails": [{"value": "a@hospital.example"}], "' + CLINICIAN +
     '": {"role": "wizard"}}', "invalidValue"),
    ('{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "weak.pw", '
     '"emails": [{"value": "a@hospital.example"}], "password": "abc"}', "invalidValue"),
    ('[' * 5000, "invalidSyntax"),
])
def test_bad_create_changes_nothing(scim, raw, scim_type):
    before = _count()
    _error(scim("POST", "/Users", raw=raw), 400, scim_type)
    assert _count() == before


def test_uniqueness_is_case_insensitive(scim):
    assert scim("POST", "/Users", user_body()).status_code == 201
    _error(scim("POST", "/Users", user_body("ALICE@Hospital.Example")), 409, "uniqueness")
    assert _count() == 1


@pytest.mark.parametrize("query", [
    'filter=userName zz "x"', 'filter=shoeSize eq "44"', 'filter=active gt true',
    "filter=" + "(" * 20 + 'userName eq "a"' + ")" * 20,
    "filter=" + " or ".join(['userName eq "a"'] * 200), "sortBy=password", "count=many",
    'filter=emails[type eq "work" and value co "x"].value eq "y"',
])
def test_bad_queries(scim, query):
    body = _error(scim("GET", f"/Users?{query}"), 400)
    assert body["scimType"] in ("invalidFilter", "invalidValue")


def test_immutable_and_bad_patch(scim):
    res = scim("POST", "/Users", user_body()).get_json(force=True)
    before = scim("GET", f"/Users/{res['id']}").get_json(force=True)
    for ops, scim_type in (([{"op": "replace", "path": "id", "value": "x"}], "mutability"),
                           ([{"op": "replace", "path": "meta.created", "value": "x"}],
                            "mutability"),
                           ([{"op": "replace", "path": "shoeSize", "value": 1}], "invalidPath"),
                           ([{"op": "frob", "path": "userName", "value": "x"}], "invalidValue"),
                           ([{"op": "replace", "path": "active", "value": "maybe"}], None)):
        _error(scim("PATCH", f"/Users/{res['id']}", {"schemas": [PATCH_OP],
                                                     "Operations": ops}), 400, scim_type)
    _error(scim("PUT", f"/Users/{res['id']}", user_body(id="another")), 400, "mutability")
    assert scim("GET", f"/Users/{res['id']}").get_json(force=True) == before


def test_tokens_refused(ctx, client):
    token = make_token("okta")
    assert Scim(client, token)("GET", "/Users").status_code == 200
    from idp.scim import tokens

    tokens.revoke("okta", actor="test")
    db.session.commit()
    _error(Scim(client, token)("GET", "/Users"), 401)
    _error(Scim(client, "scim_not-a-token")("GET", "/Users"), 401)
    assert client.get("/scim/v2/Users").status_code == 401


def test_rate_limit(app, ctx, client):
    from idp import create_app  # noqa: F401  (the session app's policy is used)

    scim = Scim(client, make_token("busy"))
    original = app.extensions["idp"].policy
    import dataclasses

    app.extensions["idp"].policy = dataclasses.replace(
        original, scim=dataclasses.replace(original.scim, rate_limit="3 per minute"))
    try:
        codes = [scim("GET", "/ServiceProviderConfig").status_code for _ in range(4)]
        limited = scim("GET", "/Users")
    finally:
        app.extensions["idp"].policy = original
    assert codes == [200, 200, 200, 429]
    _error(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1


def test_discovery(scim):
    spc = scim("GET", "/ServiceProviderConfig").get_json(force=True)
    assert spc["patch"]["supported"] and spc["filter"]["supported"] and spc["etag"]["supported"]
    assert not spc["bulk"]["supported"] and not spc["changePassword"]["supported"]
    found = scim("GET", "/Schemas").get_json(force=True)["Resources"]
    clinician = next(s for s in found if s["id"] == CLINICIAN)
    role = next(a for a in clinician["attributes"] if a["name"] == "role")
    assert "physician" in role["canonicalValues"]
    eligible = next(a for a in clinician["attributes"] if a["name"] == "epcsEligible")
    assert eligible["mutability"] == "readOnly"
    types = scim("GET", "/ResourceTypes").get_json(force=True)
    assert {t["id"] for t in types["Resources"]} == {"User", "Group"}
