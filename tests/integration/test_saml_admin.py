"""The admin console's SAML page (/admin/saml): admins only, CSRF-protected, lists each SP's
metadata parsed (ACS URLs, logout services, certificates, requested attributes), registers
one from an uploaded file or a URL (through the outbound rules), deletes one; bad metadata is
a readable 400, never a 500, and nothing is stored."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import func, select

from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.saml.models import SamlServiceProvider
from tests.helpers import csrf_from, login, make_user
from tests.integration.saml_sp import SamlTestSp, make_keypair
from tests.integration.test_saml import LAUGHS, XXE

REQUESTED = b"""<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
 entityID="https://scribe.example/saml"><md:SPSSODescriptor AuthnRequestsSigned="false"
 protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
 Location="https://scribe.example/saml/acs" index="0"/>
<md:AttributeConsumingService index="0"><md:ServiceName xml:lang="en">Scribe</md:ServiceName>
<md:RequestedAttribute Name="urn:oid:0.9.2342.19200300.100.1.3" FriendlyName="mail"/>
<md:RequestedAttribute Name="npi"/></md:AttributeConsumingService>
</md:SPSSODescriptor></md:EntityDescriptor>"""


def _stored() -> int:
    db.session.rollback()
    return db.session.execute(select(func.count()).select_from(SamlServiceProvider)
                              ).scalar_one()


@pytest.fixture
def admin(ctx, client):
    user = make_user("root.admin", npi=None, role="admin", given_name="Ada", family_name="Root")
    assert login(client, "root.admin").status_code == 302
    return user


def _upload(client, data: bytes, token: str, **fields: str):
    return client.post("/admin/saml", content_type="multipart/form-data", data={
        "csrf_token": token, "metadata_file": (io.BytesIO(data), "sp.xml"), **fields})


def test_only_admins_reach_the_page(ctx, client):
    make_user("dr.jones", npi=None)
    assert login(client, "dr.jones").status_code == 302
    token = csrf_from(client.get("/account/sessions").text)  # a valid CSRF token of theirs
    for answer in (client.get("/admin/saml"),
                   client.post("/admin/saml", data={"csrf_token": token}),
                   client.post("/admin/saml/delete", data={"entity_id": "x",
                                                           "csrf_token": token})):
        assert answer.status_code == 403
    anonymous = client.application.test_client()
    assert anonymous.get("/admin/saml").status_code in (302, 401, 403)


def test_admin_registers_from_a_file_sees_it_parsed_and_deletes_it(client, admin, tmp_path:
                                                                   Path):
    page = client.get("/admin/saml")
    assert page.status_code == 200 and 'href="/admin/saml"' in page.text  # in the nav
    assert "http://idp.test/saml/metadata" in page.text
    key, cert = make_keypair(tmp_path, "scribe-signing")
    sp = SamlTestSp("https://tool.example/saml", key, cert, base="https://tool.example",
                    encrypts=True)
    made = _upload(client, sp.metadata(), csrf_from(page.text), name="Scribe tool",
                   nameid_format="email")
    assert made.status_code == 200, made.text[:500]
    text = made.text
    assert "Scribe tool" in text and "https://tool.example/saml" in text
    assert "https://tool.example/acs" in text and "https://tool.example/slo" in text
    assert "CN=scribe-signing" in text and text.count("SHA-256 ") == 2  # signing, encryption
    row = db.session.get(SamlServiceProvider, "https://tool.example/saml")
    assert row.nameid_format == "email" and row.name == "Scribe tool"
    again = _upload(client, REQUESTED, csrf_from(text))
    assert again.status_code == 200
    assert "urn:oid:0.9.2342.19200300.100.1.3" not in again.text  # the friendly name shows
    assert "mail, npi" in again.text and _stored() == 2

    page = client.get("/admin/saml")
    no_csrf = client.post("/admin/saml/delete", data={"entity_id": sp.entity_id})
    assert no_csrf.status_code == 400 and _stored() == 2
    unknown = client.post("/admin/saml/delete", data={"entity_id": "https://nobody.example",
                                                      "csrf_token": csrf_from(page.text)})
    assert unknown.status_code == 404
    gone = client.post("/admin/saml/delete", data={"entity_id": sp.entity_id,
                                                   "csrf_token": csrf_from(page.text)})
    assert gone.status_code == 302 and _stored() == 1
    events = db.session.execute(select(AuditEvent.event, AuditEvent.actor)).all()
    assert ("saml.sp_registered", f"admin:{admin.id}") in events
    assert ("saml.sp_deleted", f"admin:{admin.id}") in events


@pytest.mark.parametrize("data, reason", [
    (b"not xml at all", "not acceptable XML"),
    (XXE.encode(), "no DTDs"),
    (LAUGHS.encode(), "no DTDs"),
    (b"\xff\xfe<md:EntityDescriptor/>", "UTF-8"),
    (b"<a>" * 100 + b"</a>" * 100, "deeply"),
    (b"<x>" + b"a" * 200_000 + b"</x>", "size limit"),
    (b'<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="x"/>',
     "exactly one service provider"),
], ids=["garbage", "xxe", "billion-laughs", "not-utf8", "deep", "huge", "no-sp"])
def test_bad_metadata_is_a_readable_400_and_nothing_is_stored(client, admin, data, reason):
    page = client.get("/admin/saml")
    answer = _upload(client, data, csrf_from(page.text))
    assert answer.status_code in (400, 413), answer.text[:300]
    if answer.status_code == 400:
        assert "The metadata was refused" in answer.text and reason in answer.text
    assert _stored() == 0


def test_bad_form_submissions(client, admin):
    page = client.get("/admin/saml")
    token = csrf_from(page.text)
    no_csrf = client.post("/admin/saml", data={"metadata_url": "https://sp.example/md"})
    assert no_csrf.status_code == 400
    neither = client.post("/admin/saml", data={"csrf_token": token})
    assert neither.status_code == 400 and "one of the two" in neither.text
    both = _upload(client, REQUESTED, token, metadata_url="https://scribe.example/md")
    assert both.status_code == 400 and "one of the two" in both.text
    ssrf = client.post("/admin/saml", data={
        "csrf_token": token, "metadata_url": "http://169.254.169.254/latest/meta-data"})
    assert ssrf.status_code == 400 and "metadata URL refused" in ssrf.text
    bad_format = _upload(client, REQUESTED, token, nameid_format="kerberos")
    assert bad_format.status_code == 400
    assert _stored() == 0
