"""UDAP and the HL7 FAST Security IG STU2 (docs/udap.md): discovery with signed_metadata,
trust communities, UDAP dynamic client registration (register, modify, cancel) and its
attacks, JWT client authentication with x5c for client_credentials (with hl7-b2b) and
authorization_code + PKCE, and the EHR's FHIR API serving a UDAP B2B token.

The PKI is real (tests/udap_pki.py) and the client is written from the IG
(tests/udap_client.py)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from joserfc import jwt
from joserfc.jwk import RSAKey
from joserfc.util import urlsafe_b64decode, urlsafe_b64encode
from sqlalchemy import func, select

from idp import create_app
from idp.admin import approval
from idp.audit.models import AuditEvent
from idp.cli import common
from idp.cli.udap import udap_group
from idp.config import Settings
from idp.extensions import db
from idp.oidc.models import Client
from idp.policy import UdapCommunityFiles
from idp.udap import service
from idp.udap.models import UdapClient, UdapUsedJti
from tests.conftest import TEST_ISSUER, TEST_POLICY, ClosingClient
from tests.helpers import auth_params, csrf_from, login, make_user, pkce, query
from tests.integration.test_smart import EHR, FHIR_BASE, stack  # noqa: F401 - the fixture
from tests.udap_client import UdapClient as Udap
from tests.udap_client import b2b, sign, validate_signed_metadata
from tests.udap_pki import B2B_URI, CLIENT_URI, pem, pki


@pytest.fixture
def community(ctx) -> None:
    """The test community in the database, as `idp udap communities add` stores it."""
    p = pki()
    service.add_community("fast-test", p.anchor_pem(), crls=p.crl_pem(), actor="test")
    db.session.commit()


@pytest.fixture
def server_cert(ctx, tmp_path: Path, monkeypatch) -> None:
    """The server's certificate (SAN URI = the issuer) and key, configured like
    IDP_UDAP_CERTIFICATE / IDP_UDAP_KEY."""
    _configure_server_cert(ctx, tmp_path, monkeypatch, TEST_ISSUER)


def _configure_server_cert(ctx, tmp_path: Path, monkeypatch, base: str) -> None:
    holder = pki().server(base)
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(holder.cert_pem() + b"".join(pem(c) for c in holder.chain))
    key.write_bytes(holder.key_pem())
    runtime = ctx.extensions["idp"]
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(
        runtime.settings, udap_certificate=cert, udap_key=key))


def _udap(holder=None, iss: str = CLIENT_URI) -> Udap:
    return Udap(holder or pki().client, iss, TEST_ISSUER)


def _clients() -> int:
    db.session.rollback()
    return db.session.execute(select(func.count()).select_from(Client)).scalar_one()


def _events(kind: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == kind)
                                   ).scalars())


# -- discovery (IG §2) ---------------------------------------------------------------------------
def test_discovery_serves_signed_metadata_a_client_can_validate(client, community,
                                                                server_cert):
    response = client.get("/.well-known/udap")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["udap_versions_supported"] == ["1"]
    assert {"udap_dcr", "udap_authn", "udap_authz"} <= set(doc["udap_profiles_supported"])
    assert doc["udap_authorization_extensions_supported"] == ["hl7-b2b"]
    assert "udap_certifications_supported" in doc
    assert doc["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert "RS256" in doc["token_endpoint_auth_signing_alg_values_supported"]
    assert "RS256" in doc["registration_endpoint_jwt_signing_alg_values_supported"]
    assert doc["registration_endpoint"] == f"{TEST_ISSUER}/register"
    claims = validate_signed_metadata(doc, TEST_ISSUER, [pki().root])
    assert claims["exp"] - claims["iat"] <= 366 * 86400


def test_discovery_without_a_server_certificate_has_no_signed_metadata(client):
    doc = client.get("/.well-known/udap").get_json()
    assert "signed_metadata" not in doc and doc["udap_versions_supported"] == ["1"]


def test_the_fhir_base_serves_metadata_signed_for_it(stack, ctx, client, tmp_path,  # noqa: F811
                                                    monkeypatch):
    """IG §2.3: signed_metadata's iss is the FHIR server's base URL. With udap.toml
    metadata_base = the EHR's FHIR base (and a certificate for it), the EHR relays the IdP's
    document at <FHIR base>/.well-known/udap and a client validates it against that base."""
    _configure_server_cert(ctx, tmp_path, monkeypatch, FHIR_BASE)
    runtime = ctx.extensions["idp"]
    rules = dataclasses.replace(runtime.policy.udap, metadata_base=FHIR_BASE)
    monkeypatch.setattr(runtime, "policy", dataclasses.replace(runtime.policy, udap=rules))
    relayed = stack["ehr"].test_client().get(f"{FHIR_BASE}/.well-known/udap")
    assert relayed.status_code == 200, relayed.text
    doc = relayed.get_json()
    claims = validate_signed_metadata(doc, FHIR_BASE, [pki().root])
    assert claims["token_endpoint"] == f"{TEST_ISSUER}/token"


# -- registration (IG §3) --------------------------------------------------------------------------
def test_register_modify_and_cancel(client, community):
    udap = _udap()
    first = udap.register(client)
    assert first.status_code == 201, first.text
    doc = first.get_json()
    client_id = doc["client_id"]
    assert doc["token_endpoint_auth_method"] == "private_key_jwt"
    assert "software_statement" in doc and "registration_access_token" not in doc
    # client_credentials and system/ scopes wait for an admin (scopes.toml [grants])
    assert doc["grant_types"] == [] and doc["approval_status"] == "pending"
    assert doc["pending_grant_types"] == ["client_credentials"]
    link = db.session.execute(select(UdapClient)).scalar_one()
    assert link.iss == CLIENT_URI and link.client_id == client_id and \
        "Scheduler App" in link.subject and link.community == "fast-test"
    assert _events("udap.registered")

    again = udap.register(client, client_name="Scheduler v2")
    assert again.status_code == 200, again.text
    assert again.get_json()["client_id"] == client_id
    assert again.get_json()["client_name"] == "Scheduler v2"
    assert _clients() == 1

    cancelled = udap.register(client, grant_types=[])
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.get_json()["grant_types"] == []
    assert _clients() == 0 and db.session.execute(select(UdapClient)).first() is None


def test_a_plain_rfc7591_request_still_needs_an_initial_access_token(client, community):
    response = client.post("/register", json={"client_name": "x",
                                              "redirect_uris": ["https://x.example/cb"]})
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"


def _attack(name: str) -> tuple[dict[str, Any], str]:
    """A registration body and the IG error code it must earn."""
    p = pki()
    udap = _udap()
    good = udap.statement()
    if name == "untrusted root":
        return udap.register_body(good, holder=p.untrusted), "unapproved_software_statement"
    if name == "expired":
        return udap.register_body(good, holder=p.expired), "invalid_software_statement"
    if name == "revoked":
        return udap.register_body(good, holder=p.revoked), "invalid_software_statement"
    if name == "no digitalSignature":
        return udap.register_body(good, holder=p.no_signature), "invalid_software_statement"
    if name == "SAN is not iss":  # a valid certificate of the community, for another URI
        return udap.register_body(good, holder=p.other), "invalid_software_statement"
    if name == "wrong aud":
        return (udap.register_body(udap.statement(aud=f"{TEST_ISSUER}/token")),
                "invalid_software_statement")
    if name == "sub is not iss":
        return udap.register_body(udap.statement(sub="https://x.example")), \
            "invalid_software_statement"
    if name == "long exp":
        return udap.register_body(udap.statement(lifetime=3600)), "invalid_software_statement"
    if name == "alg none":
        token = _unsigned({"alg": "none", "x5c": p.client.x5c()}, good)
        return {"udap": "1", "software_statement": token}, "invalid_software_statement"
    if name == "swapped leaf":  # signed by the client's key, another valid leaf in x5c
        return (udap.register_body(good, x5c=[p.other.x5c()[0], *p.client.x5c()[1:]]),
                "invalid_software_statement")
    if name == "oversized chain":
        return (udap.register_body(good, x5c=[*p.client.x5c(), *[p.client.x5c()[1]] * 6]),
                "invalid_software_statement")
    if name == "no x5c":
        return udap.register_body(good, x5c=[]), "invalid_software_statement"
    if name == "token auth method":
        return (udap.register_body(udap.statement(token_endpoint_auth_method="none")),
                "invalid_client_metadata")
    if name == "udap version":
        return {**udap.register_body(good), "udap": "2"}, "invalid_client_metadata"
    raise AssertionError(name)


def _unsigned(head: dict, claims: dict) -> str:
    return ".".join(urlsafe_b64encode(json.dumps(x).encode()).decode()
                    for x in (head, claims)) + "."


@pytest.mark.parametrize("name", [
    "untrusted root", "expired", "revoked", "no digitalSignature", "SAN is not iss",
    "wrong aud", "sub is not iss", "long exp", "alg none", "swapped leaf", "oversized chain",
    "no x5c", "token auth method", "udap version"])
def test_registration_attacks_are_refused_and_nothing_is_registered(client, community, name):
    body, code = _attack(name)
    response = client.post("/register", json=body)
    assert response.status_code == 400, response.text
    assert response.get_json()["error"] == code, response.get_json()
    assert _clients() == 0
    assert db.session.execute(select(UdapClient)).first() is None


def test_a_reused_jti_is_refused(client, community):
    udap = _udap()
    body = udap.register_body(udap.statement())
    assert client.post("/register", json=body).status_code == 201
    replay = client.post("/register", json=body)
    assert replay.status_code == 400
    assert replay.get_json()["error"] == "invalid_software_statement"
    assert "jti" in replay.get_json()["error_description"]
    assert _clients() == 1 and db.session.execute(select(UdapUsedJti)).first() is not None


def test_another_community_cannot_take_a_registration_over(client, community):
    """The same SAN URI vouched for by a second community neither modifies nor cancels the
    registration, nor authenticates as the client."""
    p = pki()
    udap = _udap()
    assert udap.register(client).status_code == 201
    service.add_community("second", pem(p.untrusted_root), actor="test")
    db.session.commit()
    impostor = _udap(p.untrusted, CLIENT_URI)
    for grants in (None, []):
        body = impostor.register_body(impostor.statement(grant_types=grants))
        response = client.post("/register", json=body)
        assert response.status_code == 400
        assert response.get_json()["error"] == "unapproved_software_statement"
    assert _clients() == 1
    row = db.session.execute(select(Client)).scalar_one()
    approval.approve(row, actor="test-admin")
    db.session.commit()
    impostor.client_id = udap.client_id
    taken = impostor.client_credentials(client, "system/*.read", b2b=b2b())
    assert taken.status_code == 401 and taken.get_json()["error"] == "invalid_client"


def test_without_a_community_nothing_is_trusted(client):
    udap = _udap()
    response = client.post("/register", json=udap.register_body(udap.statement()))
    assert response.get_json()["error"] == "unapproved_software_statement"


def test_a_community_from_policy_files(app, client, tmp_path, monkeypatch):
    """udap.toml [communities.<name>]: anchors and CRLs as files."""
    p = pki()
    (tmp_path / "root.pem").write_bytes(p.anchor_pem())
    (tmp_path / "ca.crl").write_bytes(p.crl_pem())
    runtime = app.extensions["idp"]
    files = UdapCommunityFiles("files", (str(tmp_path / "root.pem"),), (),
                               (str(tmp_path / "ca.crl"),))
    udap_rules = dataclasses.replace(runtime.policy.udap, communities={"files": files})
    monkeypatch.setattr(runtime, "policy", dataclasses.replace(runtime.policy, udap=udap_rules))
    with app.app_context():
        udap = _udap()
        assert udap.register(client).status_code == 201
        revoked = _udap(p.revoked, CLIENT_URI)
        response = client.post("/register", json=revoked.register_body(revoked.statement()))
        assert response.get_json()["error"] == "invalid_software_statement"
        assert "revoked" in response.get_json()["error_description"]


# -- client_credentials with hl7-b2b (IG §5) ------------------------------------------------------
def _approved_b2b(http, scope: str = "system/Patient.rs") -> Udap:
    udap = _udap(pki().b2b, B2B_URI)
    response = udap.register(http, scope=scope)
    assert response.status_code == 201, response.text
    row = db.session.execute(select(Client).where(
        Client.client_id == udap.client_id)).scalar_one()
    approval.approve(row, actor="test-admin")
    db.session.commit()
    return udap


def _payload(token: str) -> dict[str, Any]:
    return json.loads(urlsafe_b64decode(token.split(".")[1].encode()))


def test_client_credentials_with_b2b_is_carried_in_the_token_and_audited(client, community):
    udap = _approved_b2b(client)
    response = udap.client_credentials(client, "system/Patient.rs", b2b=b2b())
    assert response.status_code == 200, response.text
    access = _payload(response.get_json()["access_token"])
    assert access["sub"] == udap.client_id
    carried = access["extensions"]["hl7-b2b"]
    assert carried["organization_id"] == "https://payer.example.org/org/123"
    assert carried["purpose_of_use"] == ["urn:oid:2.16.840.1.113883.5.8#TREAT"]
    event = _events("udap.b2b")[0]
    assert event.client_id == udap.client_id


@pytest.mark.parametrize(("extension", "error"), [
    (None, "invalid_grant"),                                   # required by policy
    (b2b(purpose_of_use=None), "invalid_grant"),
    (b2b(organization_id=None), "invalid_grant"),
    (b2b(version="2"), "invalid_grant"),
    (b2b(organization_id="not a uri"), "invalid_grant"),
    (b2b(purpose_of_use=[{"x": 1}]), "invalid_grant"),
])
def test_b2b_extension_missing_required_fields_is_refused(client, community, extension, error):
    udap = _approved_b2b(client)
    response = udap.client_credentials(client, "system/Patient.rs", b2b=extension)
    assert response.status_code == 400, response.text
    assert response.get_json()["error"] == error
    assert not _events("token.issued")


def test_client_assertion_attacks(client, community):
    p = pki()
    udap = _approved_b2b(client)
    ext = {"hl7-b2b": b2b()}
    # without x5c (a plain private_key_jwt with the same key)
    bare = sign(p.b2b, {"iss": udap.client_id, "sub": udap.client_id,
                        "aud": udap.token_endpoint, "exp": int(time.time()) + 60,
                        "iat": int(time.time()), "jti": "j-bare", "extensions": ext}, x5c=None)
    no_x5c = jwt.encode({"alg": "RS256"}, _payload(bare), RSAKey.import_key(p.b2b.key))
    for assertion, why in [
        (no_x5c, "no x5c"),
        (udap.assertion(extensions=ext, holder=p.revoked), "revoked"),
        (udap.assertion(extensions=ext, holder=p.untrusted), "untrusted root"),
        (udap.assertion(extensions=ext, holder=p.client), "another client's certificate"),
        (udap.assertion(extensions=ext, aud=f"{TEST_ISSUER}/register"), "wrong aud"),
        (udap.assertion(extensions=ext, exp=int(time.time()) + 3600), "long exp"),
    ]:
        response = udap.client_credentials(client, "system/Patient.rs", assertion=assertion)
        assert response.status_code == 401, (why, response.text)
        assert response.get_json()["error"] == "invalid_client", why
    once = udap.assertion(extensions=ext)
    assert udap.client_credentials(client, "system/Patient.rs",
                                   assertion=once).status_code == 200
    replay = udap.client_credentials(client, "system/Patient.rs", assertion=once)
    assert replay.status_code == 401 and replay.get_json()["error"] == "invalid_client"


# -- authorization_code + PKCE (IG §4) ------------------------------------------------------------
def test_authorization_code_with_pkce_and_an_x5c_assertion(client, community):
    udap = _udap()
    redirect = "https://apps.example.org/cb"
    response = udap.register(client, grant_types=["authorization_code"],
                             scope="openid profile", redirect_uris=[redirect])
    assert response.status_code == 201, response.text
    assert response.get_json()["grant_types"] == ["authorization_code"]
    make_user()
    login(client)
    verifier, challenge = pkce()
    params = auth_params(type("Rp", (), {"client_id": udap.client_id, "redirect_uri": redirect})(),
                         challenge, scope="openid profile")
    page = client.get("/authorize?" + urlencode(params))
    assert page.status_code == 200 and 'name="decision"' in page.text, page.text[:300]
    done = client.post(page.request.full_path, data={"decision": "allow",
                                                     "csrf_token": csrf_from(page.text)})
    assert done.status_code == 302, done.text[:300]
    code = query(done.headers["Location"])["code"]
    # a verifier that does not match is refused (PKCE)
    wrong = udap.code_exchange(client, code, redirect, "x" * 50)
    assert wrong.status_code == 400
    code2 = _second_code(client, udap, redirect)
    tokens = udap.code_exchange(client, code2[0], redirect, code2[1])
    assert tokens.status_code == 200, tokens.text
    assert "id_token" in tokens.get_json()


def test_as_the_upstream_of_tiered_oauth_it_authenticates_for_another_server(client,
                                                                              community):
    """IG §6 from the IdP's side: another organisation's server (a UDAP client) registers
    with `openid udap`; once an admin approves `udap`, a user's sign-in gives it an ID token."""
    udap = _udap()
    redirect = "https://apps.example.org/cb"
    response = udap.register(client, grant_types=["authorization_code"], scope="openid udap",
                             redirect_uris=[redirect])
    assert response.status_code == 201, response.text
    assert response.get_json()["pending_scope"] == "udap"  # an admin decides
    approval.approve(db.session.execute(select(Client)).scalar_one(), actor="test-admin")
    db.session.commit()
    assert "udap" in client.get("/.well-known/udap").get_json()["scopes_supported"]
    make_user()
    login(client)
    code, verifier = _second_code(client, udap, redirect, "openid udap")
    tokens = udap.code_exchange(client, code, redirect, verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.get_json()
    assert body["scope"] == "openid udap"
    id_token = _payload(body["id_token"])
    assert id_token["aud"] == [udap.client_id] and id_token["iss"] == TEST_ISSUER


def _second_code(client, udap: Udap, redirect: str, scope: str = "openid profile"
                 ) -> tuple[str, str]:
    verifier, challenge = pkce()
    params = auth_params(type("Rp", (), {"client_id": udap.client_id, "redirect_uri": redirect})(),
                         challenge, scope=scope)
    response = client.get("/authorize?" + urlencode(params))
    if response.status_code == 200:  # consent again
        response = client.post(response.request.full_path, data={
            "decision": "allow", "csrf_token": csrf_from(response.text)})
    assert response.status_code == 302, response.text[:300]
    return query(response.headers["Location"])["code"], verifier


# -- operators: `idp udap communities` ------------------------------------------------------------
def test_cli_communities_add_and_list(app, ctx, tmp_path, monkeypatch):
    p = pki()
    (tmp_path / "root.pem").write_bytes(p.anchor_pem())
    (tmp_path / "ca.crl").write_bytes(p.crl_pem())
    monkeypatch.setattr(common, "load_app", lambda ensure_keys=True: app)
    runner = CliRunner()
    added = runner.invoke(udap_group, ["communities", "add", "--name", "cli-test", "--anchor",
                                       str(tmp_path / "root.pem"), "--crl",
                                       str(tmp_path / "ca.crl"), "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.output) == {"name": "cli-test", "anchors": 1, "crls": 1}
    listed = runner.invoke(udap_group, ["communities", "list", "--json"])
    rows = json.loads(listed.output)
    assert rows[0]["name"] == "cli-test" and rows[0]["source"] == "database"
    assert "Test Community Root CA" in rows[0]["anchors"][0]["subject"]
    bad = runner.invoke(udap_group, ["communities", "add", "--name", "bad name!", "--anchor",
                                     str(tmp_path / "root.pem")])
    assert bad.exit_code == 2


# -- the EHR's FHIR API serves the B2B token (end to end) ------------------------------------
def test_the_ehrs_fhir_api_serves_a_udap_b2b_token(stack, client, community):  # noqa: F811
    """A payer registers through UDAP, an admin approves system/Patient.rs, the payer's
    client_credentials token (x5c assertion, hl7-b2b) is accepted by the EHR's FHIR API."""
    udap = _approved_b2b(client)
    response = udap.client_credentials(client, "system/Patient.rs", b2b=b2b())
    assert response.status_code == 200, response.text
    token = response.get_json()["access_token"]
    access = _payload(token)
    assert access["aud"] == EHR and access["extensions"]["hl7-b2b"]["purpose_of_use"]
    http = stack["ehr"].test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    found = http.get(f"{FHIR_BASE}/Patient", headers=bearer)
    assert found.status_code == 200, found.text
    assert found.get_json()["resourceType"] == "Bundle" and found.get_json()["entry"]
    assert http.get(f"{FHIR_BASE}/Patient/DEMO-0002", headers=bearer).status_code == 200
    # a scope it was not granted is refused by the IdP, not silently narrowed
    refused = udap.client_credentials(client, "system/Observation.rs", b2b=b2b())
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_scope"


# -- the admin console ---------------------------------------------------------------------
def test_the_console_shows_communities_udap_clients_and_b2b_activity(app, client, community):
    udap = _approved_b2b(client)
    assert udap.client_credentials(client, "system/Patient.rs", b2b=b2b()).status_code == 200
    # a clinician may not see the page
    make_user()
    login(client)
    assert client.get("/admin/udap").status_code == 403
    admin = app.test_client()
    make_user("root.admin", npi=None, role="admin")
    assert login(admin, "root.admin").status_code == 302
    page = admin.get("/admin/udap")
    assert page.status_code == 200, page.text[:300]
    assert 'data-community="fast-test"' in page.text and "Test Community Root CA" in page.text
    assert f'data-client="{udap.client_id}"' in page.text and "Payer Service" in page.text
    assert "Example Payer" in page.text and "TREAT" in page.text
    assert 'href="/admin/udap"' in admin.get("/admin/").text


def test_udap_off_leaves_no_trace(app, env, ctx):
    """policies/udap.toml `enabled = false`: no metadata, no UDAP registration (a UDAP body is
    an RFC 7591 request needing an initial access token), no `udap` scope."""
    off = create_app(Settings.from_env(env),
                     policy_overrides={**TEST_POLICY, "udap": {"enabled": False}})
    off.test_client_class = ClosingClient
    http = off.test_client()
    assert http.get("/.well-known/udap").status_code == 404
    udap = _udap()
    with off.app_context():
        response = http.post("/register", json=udap.register_body(udap.statement()))
        assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
        assert "udap" not in http.get("/.well-known/openid-configuration").get_json()[
            "scopes_supported"]
