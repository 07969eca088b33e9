"""The SAML IdP in-process: metadata, the SP registry (CLI), SP-initiated sign-in through the
/authorize checks to a signed assertion a pysaml2 SP accepts, and the bad input of issue 25
(each answered with a readable 4xx page or a SAML error status, nothing issued, no 500)."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, BINDING_SOAP, xmldsig
from saml2.saml import (
    NAME_FORMAT_BASIC,
    NAME_FORMAT_URI,
    NAMEID_FORMAT_PERSISTENT,
    AuthnContextClassRef,
    NameID,
)
from saml2.samlp import RequestedAuthnContext
from sqlalchemy import func, select

from idp import clock
from idp.audit.models import AuditEvent
from idp.cli import main
from idp.context import runtime
from idp.extensions import db
from idp.oidc import backchannel
from idp.saml.models import SamlParticipant, SamlRequest
from idp.sessions.models import SsoSession
from tests.helpers import csrf_from, exchange, get_code, login, make_client, make_user
from tests.integration.saml_sp import (
    SamlTestSp,
    form_action,
    form_fields,
    make_keypair,
    query_of,
    redirect_payload,
)
from tests.receiver import Receiver

IDP = "http://idp.test/saml/metadata"
SSO = "http://idp.test/saml/sso"
SLO = "http://idp.test/saml/slo"


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args], env=env, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def sp(ctx, client, env, tmp_path: Path) -> SamlTestSp:
    key, cert = make_keypair(tmp_path)
    made = SamlTestSp("http://sp.test/metadata", key, cert)
    made.idp_metadata = client.get("/saml/metadata").text
    path = tmp_path / "sp.xml"
    path.write_bytes(made.metadata())
    code, out = _cli(env, "saml", "sps", "create", "--metadata-file", str(path), "--name",
                     "Test SP", "--json")
    assert code == 0, out
    assert json.loads(out)["entity_id"] == made.entity_id
    return made


@pytest.fixture
def user(ctx):
    return make_user(facility="General Hospital")


def _requests() -> int:
    db.session.rollback()
    return db.session.execute(select(func.count()).select_from(SamlRequest)).scalar_one()


def _sign_in_and_post(client, sp: SamlTestSp, url: str) -> tuple[str, dict[str, str]]:
    first = client.get(url)
    assert first.status_code == 302, first.text[:400]
    resume = first.headers["Location"]
    assert resume.startswith("/saml/resume/")
    to_login = client.get(resume)
    assert to_login.status_code == 302 and to_login.headers["Location"].startswith("/login")
    done = login(client, next_url=resume)
    assert done.status_code == 302 and done.headers["Location"] == resume, done.text[:300]
    page = client.get(resume)
    assert page.status_code == 200, page.text[:400]
    assert f"form-action {sp.base}" in page.headers["Content-Security-Policy"]
    return form_action(page.text), form_fields(page.text)


def test_metadata_is_signed_with_valid_until_and_names_the_endpoints(client, ctx):
    page = client.get("/saml/metadata")
    assert page.status_code == 200
    assert page.mimetype == "application/samlmetadata+xml"
    text = page.text
    assert f'entityID="{IDP}"' in text and "validUntil=" in text
    assert "Signature" in text and 'use="signing"' in text
    assert f'Location="{SSO}"' in text and f'Location="{SLO}"' in text
    assert "nameid-format:persistent" in text and "nameid-format:emailAddress" in text


def test_cli_registers_updates_lists_and_deletes(sp, env, tmp_path):
    path = tmp_path / "again.xml"
    path.write_bytes(sp.metadata())
    code, out = _cli(env, "saml", "sps", "create", "--metadata-file", str(path),
                     "--nameid-format", "email", "--json")
    assert code == 0 and json.loads(out)["created"] is False
    assert json.loads(out)["nameid_format"] == "email"
    code, out = _cli(env, "saml", "sps", "list", "--json")
    assert [r["entity_id"] for r in json.loads(out)] == [sp.entity_id]
    code, out = _cli(env, "saml", "sps", "delete", sp.entity_id, "--json")
    assert code == 0
    code, out = _cli(env, "saml", "sps", "list", "--json")
    assert json.loads(out) == []


def test_metadata_url_goes_through_the_outbound_rules(ctx, env):
    code, out = _cli(env, "saml", "sps", "create", "--metadata-url",
                     "http://169.254.169.254/latest/meta-data", "--json")
    assert code == 2 and "refused" in out


def test_sp_initiated_sign_in_posts_a_signed_assertion_the_sp_accepts(client, sp, user):
    url = sp.authn_redirect(IDP, relay_state="https://elsewhere.example/x?y=1")
    action, fields = _sign_in_and_post(client, sp, url)
    assert action == sp.acs
    assert fields["RelayState"] == "https://elsewhere.example/x?y=1"  # data, unchanged
    parsed = sp.client().parse_authn_request_response(
        fields["SAMLResponse"], BINDING_HTTP_POST, outstanding={_request_id(url): sp.acs})
    assert parsed is not None
    ava = parsed.get_identity()
    assert ava["email"] == [user.email] and ava["roles"] == ["physician"]
    assert ava["npi"] == [user.npi] and ava["facility"] == ["General Hospital"]
    assert ava["preferred_username"] == ["drsmith"] and ava["given_name"] == ["Ana"]
    assertion = parsed.assertion
    assert assertion.signature is not None
    assert assertion.conditions.audience_restriction[0].audience[0].text == sp.entity_id
    name_id = parsed.name_id
    assert name_id.format == NAMEID_FORMAT_PERSISTENT and name_id.text != user.subject
    issued = datetime.fromisoformat(assertion.issue_instant.replace("Z", "+00:00"))
    until = datetime.fromisoformat(assertion.conditions.not_on_or_after.replace("Z", "+00:00"))
    assert timedelta(0) < until - issued <= timedelta(minutes=5)
    confirmation = assertion.subject.subject_confirmation[0]
    assert confirmation.method == "urn:oasis:names:tc:SAML:2.0:cm:bearer"
    assert confirmation.subject_confirmation_data.recipient == sp.acs
    ref = assertion.authn_statement[0].authn_context.authn_context_class_ref.text
    assert ref == "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract"
    raw = base64.b64decode(fields["SAMLResponse"]).decode()
    assert f'Destination="{sp.acs}"' in raw
    db.session.rollback()
    assert db.session.execute(select(SamlParticipant)).scalar_one().sp_entity_id == \
        sp.entity_id
    assert "saml.sso" in db.session.execute(select(AuditEvent.event)).scalars().all()
    # the request is answered once
    again = client.get(f"/saml/resume/{db.session.execute(select(SamlRequest.key)).scalar()}")
    assert again.status_code == 400


def _request_id(url: str) -> str:
    import zlib

    payload = query_of("http://x/?" + url.split("?", 1)[1])["SAMLRequest"]
    xml = zlib.decompress(base64.b64decode(payload), -15).decode()
    return xml.split('ID="', 1)[1].split('"', 1)[0]


def test_tampering_with_one_signed_attribute_is_refused_by_the_sp(client, sp, user):
    url = sp.authn_redirect(IDP)
    _, fields = _sign_in_and_post(client, sp, url)
    raw = base64.b64decode(fields["SAMLResponse"]).decode()
    assert ">physician<" in raw
    forged = base64.b64encode(raw.replace(">physician<", ">administrator<").encode()).decode()
    with pytest.raises(Exception):  # noqa: B017,PT011 - pysaml2's SignatureError family
        sp.client().parse_authn_request_response(forged, BINDING_HTTP_POST,
                                                 outstanding={_request_id(url): sp.acs})


# -- bad input -------------------------------------------------------------------------------
def test_unregistered_entity_id_gets_a_page_and_nothing_is_kept(client, ctx, tmp_path, user):
    key, cert = make_keypair(tmp_path, "stranger")
    stranger = SamlTestSp("http://stranger.test/metadata", key, cert, base="http://stranger.test")
    stranger.idp_metadata = client.get("/saml/metadata").text
    answer = client.get(stranger.authn_redirect(IDP))
    assert answer.status_code == 403 and "not registered" in answer.text
    assert "SAMLResponse" not in answer.text and _requests() == 0
    login(client)  # even signed in, nothing goes anywhere
    answer = client.get(stranger.authn_redirect(IDP))
    assert answer.status_code == 403 and "SAMLResponse" not in answer.text


def test_acs_url_not_in_metadata_is_refused_before_sign_in(client, sp, user):
    xml = sp.authn_request_xml(IDP, SSO, assertion_consumer_service_url="http://evil.test/acs",
                               sign=True, sign_alg=xmldsig.SIG_RSA_SHA256,
                               digest_alg=xmldsig.DIGEST_SHA256)
    login(client)
    answer = client.post("/saml/sso", data={"SAMLRequest": base64.b64encode(xml.encode())})
    assert answer.status_code == 400 and "AssertionConsumerServiceURL" in answer.text
    assert "SAMLResponse" not in answer.text and _requests() == 0


def test_replayed_authn_request_is_refused(client, sp, user):
    url = sp.authn_redirect(IDP)
    assert client.get(url).status_code == 302
    again = client.get(url)
    assert again.status_code == 400 and "replay" in again.text
    assert _requests() == 1


def test_unsigned_request_from_an_sp_that_signs_is_refused(client, sp):
    url = sp.authn_redirect(IDP)
    stripped = url.split("&SigAlg=")[0]
    answer = client.get(stripped)
    assert answer.status_code == 400 and _requests() == 0
    forged = url.replace("Signature=", "Signature=AAAA")
    assert client.get(forged).status_code == 400 and _requests() == 0


XXE = """<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
 xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="id1" Version="2.0"
 IssueInstant="2026-01-01T00:00:00Z"><saml:Issuer>&x;</saml:Issuer></samlp:AuthnRequest>"""
LAUGHS = """<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
 xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="id2" Version="2.0"
 IssueInstant="2026-01-01T00:00:00Z"><saml:Issuer>&lol3;</saml:Issuer></samlp:AuthnRequest>"""


@pytest.mark.parametrize("xml", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
def test_dtds_and_entities_are_refused(client, sp, xml):
    for path in ("/saml/sso", "/saml/slo"):
        for answer in (client.post(path, data={"SAMLRequest": base64.b64encode(
                xml.encode())}), client.get(path, query_string={
                    "SAMLRequest": redirect_payload(xml)})):
            assert answer.status_code == 400 and "DTD" in answer.text, path
            assert "root:" not in answer.text
    assert _requests() == 0


def test_oversized_and_deflate_bomb_payloads_are_refused(client, sp):
    huge = base64.b64encode(b"<a>" + b"x" * 200_000 + b"</a>").decode()
    assert client.post("/saml/sso", data={"SAMLRequest": huge}).status_code == 413  # body cap
    answer = client.get("/saml/sso", query_string={"SAMLRequest": huge})
    assert answer.status_code == 400 and "size limit" in answer.text
    bomb = redirect_payload("<a>" + "A" * 5_000_000 + "</a>")
    assert len(bomb) < 20_000  # small on the wire
    answer = client.get("/saml/sso", query_string={"SAMLRequest": bomb})
    assert answer.status_code == 400 and "size limit" in answer.text
    deep = "<a>" * 200 + "</a>" * 200
    answer = client.get("/saml/sso", query_string={"SAMLRequest": redirect_payload(deep)})
    assert answer.status_code == 400 and "deeply" in answer.text
    assert client.get("/saml/sso", query_string={"SAMLRequest": "%%%not-base64"}
                      ).status_code == 400
    assert client.get("/saml/sso").status_code == 400
    assert _requests() == 0


def test_clock_skew_bounds(client, sp, frozen, user):
    url = sp.authn_redirect(IDP)
    frozen.advance(11 * 60)  # issued 11 minutes ago: request_max_age 600 s
    assert client.get(url).status_code == 400
    frozen.advance(-13 * 60)  # issued 2 minutes in the future: skew 60 s
    assert client.get(url).status_code == 400
    frozen.advance(90)  # 30 s ahead: within the skew
    assert client.get(url).status_code == 302


def test_is_passive_without_a_session_answers_no_passive(client, sp):
    url = sp.authn_redirect(IDP, is_passive="true")
    resume = client.get(url).headers["Location"]
    page = client.get(resume)
    assert page.status_code == 200
    raw = base64.b64decode(form_fields(page.text)["SAMLResponse"]).decode()
    assert "urn:oasis:names:tc:SAML:2.0:status:NoPassive" in raw and "Assertion" not in raw


def test_force_authn_asks_for_the_password_again(client, sp, user):
    login(client)
    url = sp.authn_redirect(IDP, force_authn="true")
    resume = client.get(url).headers["Location"]
    again = client.get(resume)
    assert again.status_code == 302 and again.headers["Location"].startswith("/login")


# -- single logout ---------------------------------------------------------------------------
def _signed_in_at_sp(client, sp) -> NameID:
    url = sp.authn_redirect(IDP)
    _, fields = _sign_in_and_post(client, sp, url)
    parsed = sp.client().parse_authn_request_response(
        fields["SAMLResponse"], BINDING_HTTP_POST, outstanding={_request_id(url): sp.acs})
    return parsed.name_id


def _live_sessions() -> int:
    db.session.rollback()
    return len(db.session.execute(select(SsoSession).where(
        SsoSession.ended_at.is_(None))).scalars().all())


def test_sp_initiated_logout_ends_our_session_and_answers_signed(client, sp, user):
    name_id = _signed_in_at_sp(client, sp)
    assert _live_sessions() == 1
    sp_client = sp.client()
    _, request = sp_client.create_logout_request(SLO, IDP, name_id=name_id, sign=True,
                                                 sign_alg=xmldsig.SIG_RSA_SHA256,
                                                 digest_alg=xmldsig.DIGEST_SHA256)
    answer = client.post("/saml/slo", data={"SAMLRequest": base64.b64encode(
        str(request).encode()), "RelayState": "bye"})
    assert answer.status_code == 302, answer.text[:300]
    assert answer.headers["Location"].startswith(f"{sp.base}/slo?SAMLResponse=")
    got = query_of(answer.headers["Location"])
    assert got["RelayState"] == "bye" and got["Signature"]
    assert _live_sessions() == 0
    events = db.session.execute(select(AuditEvent.event)).scalars().all()
    assert "saml.slo" in events


def test_logout_request_with_a_comment_in_the_name_id_is_refused(client, sp, user):
    name_id = _signed_in_at_sp(client, sp)
    forged = NameID(format=name_id.format, text=name_id.text[:5] + "<!---->" + name_id.text[5:],
                    name_qualifier=name_id.name_qualifier,
                    sp_name_qualifier=name_id.sp_name_qualifier)
    _, request = sp.client().create_logout_request(SLO, IDP, name_id=forged, sign=True,
                                                   sign_alg=xmldsig.SIG_RSA_SHA256,
                                                   digest_alg=xmldsig.DIGEST_SHA256)
    text = str(request).replace("&lt;!----&gt;", "<!---->")
    answer = client.post("/saml/slo", data={"SAMLRequest": base64.b64encode(text.encode())})
    assert answer.status_code == 400
    assert _live_sessions() == 1


def test_signature_wrapping_of_a_logout_request_is_refused(client, sp, user):
    """XSW: the signed LogoutRequest (naming nobody) moved inside an unsigned one naming the
    victim: the signature no longer covers what would be acted on."""
    victim = _signed_in_at_sp(client, sp)
    decoy = NameID(format=victim.format, text="nobody", name_qualifier=victim.name_qualifier,
                   sp_name_qualifier=victim.sp_name_qualifier)
    _, signed = sp.client().create_logout_request(SLO, IDP, name_id=decoy, sign=True,
                                                  sign_alg=xmldsig.SIG_RSA_SHA256,
                                                  digest_alg=xmldsig.DIGEST_SHA256)
    signed_text = str(signed)
    # XSW variant 1: a fresh unsigned root naming the victim, carrying the signed original
    # in an Extensions element; variant 2: the victim's NameID swapped in, signature kept.
    inner = signed_text.split("?>", 1)[-1]
    wrapped = (f'<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
               f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="evil" Version="2.0" '
               f'IssueInstant="{clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")}" '
               f'Destination="{SLO}"><saml:Issuer>{sp.entity_id}</saml:Issuer>'
               f'<samlp:Extensions>{inner}</samlp:Extensions>'
               f'<saml:NameID Format="{victim.format}">{victim.text}</saml:NameID>'
               f'</samlp:LogoutRequest>')
    swapped = signed_text.replace(">nobody<", f">{victim.text}<")
    for forged in (wrapped, swapped):
        answer = client.post("/saml/slo", data={"SAMLRequest": base64.b64encode(
            forged.encode())})
        assert answer.status_code == 400, answer.text[:300]
    assert _live_sessions() == 1


def test_unsigned_logout_request_is_refused(client, sp, user):
    name_id = _signed_in_at_sp(client, sp)
    _, request = sp.client().create_logout_request(SLO, IDP, name_id=name_id, sign=False)
    answer = client.post("/saml/slo", data={"SAMLRequest": base64.b64encode(
        str(request).encode())})
    assert answer.status_code == 400 and _live_sessions() == 1


# -- our session's end reaches the SAML SPs; IdP-initiated sign-in -----------------------------
class _SoapSp(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length", "0"))
        self.server.posts.append(self.rfile.read(length).decode())
        body = b'<?xml version="1.0"?><Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"/>'
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def soap_sp(ctx, client, env, tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SoapSp)
    httpd.posts = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    key, cert = make_keypair(tmp_path, "soap")
    made = SamlTestSp(f"http://127.0.0.1:{httpd.server_port}/metadata", key, cert,
                      base=f"http://127.0.0.1:{httpd.server_port}")
    made.idp_metadata = client.get("/saml/metadata").text
    path = tmp_path / "soap.xml"
    path.write_bytes(made.metadata())
    code, out = _cli(env, "saml", "sps", "create", "--metadata-file", str(path), "--json")
    assert code == 0, out
    yield made, httpd
    httpd.shutdown()
    httpd.server_close()


def test_logout_at_the_idp_sends_the_sp_a_signed_soap_logout_request(client, soap_sp, user):
    sp, receiver = soap_sp
    name_id = _signed_in_at_sp(client, sp)
    page = client.get("/logout")
    client.post("/logout", data={"confirm": "yes", "csrf_token": csrf_from(page.text)})
    assert _live_sessions() == 0
    assert len(receiver.posts) == 1
    request = sp.client().parse_logout_request(receiver.posts[0], BINDING_SOAP)
    assert request.message.name_id.text == name_id.text
    assert request.message.signature is not None  # verified by the SP's pysaml2 + xmlsec1
    db.session.rollback()
    events = db.session.execute(select(AuditEvent.event)).scalars().all()
    assert "saml.logout_sent" in events
    assert db.session.execute(select(SamlParticipant.ended_at)).scalar_one() is not None


def test_idp_initiated_launch_signs_in_first_and_posts_an_unsolicited_assertion(
        client, sp, user):
    first = client.get("/saml/launch", query_string={"sp": sp.entity_id, "RelayState": "/home"})
    assert first.status_code == 302
    resume = first.headers["Location"]
    assert client.get(resume).headers["Location"].startswith("/login")
    login(client, next_url=resume)
    page = client.get(resume)
    fields = form_fields(page.text)
    assert form_action(page.text) == sp.acs and fields["RelayState"] == "/home"
    parsed = sp.client().parse_authn_request_response(fields["SAMLResponse"],
                                                      BINDING_HTTP_POST, outstanding={})
    assert parsed.get_identity()["preferred_username"] == ["drsmith"]
    assert "InResponseTo" not in base64.b64decode(fields["SAMLResponse"]).decode()
    assert client.get("/saml/launch", query_string={"sp": "http://nobody.test"}
                      ).status_code == 404


def test_sp_initiated_logout_fans_out_to_oidc_relying_parties(client, sp, user):
    """Mixed protocols: the SAML SP's LogoutRequest ends the SSO session, and the OpenID
    relying party that received tokens in it gets its back-channel logout token."""
    receiver = Receiver().start()
    try:
        rp = make_client(backchannel_logout_uri=receiver.url())
        name_id = _signed_in_at_sp(client, sp)
        code, verifier, _ = get_code(client, rp, scope="openid")  # same session, no password
        assert exchange(client, rp, code, verifier).status_code == 200
        _, request = sp.client().create_logout_request(SLO, IDP, name_id=name_id, sign=True,
                                                       sign_alg=xmldsig.SIG_RSA_SHA256,
                                                       digest_alg=xmldsig.DIGEST_SHA256)
        answer = client.post("/saml/slo", data={"SAMLRequest": base64.b64encode(
            str(request).encode())})
        assert answer.status_code == 302 and _live_sessions() == 0
        [post] = receiver.posts
        assert post.logout_token
        assert backchannel.deliveries(None)[0].client_id == rp.client_id
    finally:
        receiver.stop()


def test_a_session_ended_from_the_cli_reaches_the_sp_too(client, soap_sp, user, env):
    """Deprovisioning (`idp users disable`) ends the account's sessions outside any request:
    the SP gets its LogoutRequest in the command, recorded in its transaction."""
    sp, receiver = soap_sp
    _signed_in_at_sp(client, sp)
    code, out = _cli(env, "users", "disable", "drsmith", "--json")
    assert code == 0, out
    assert _live_sessions() == 0 and len(receiver.posts) == 1
    assert "saml.logout_sent" in db.session.execute(select(AuditEvent.event)).scalars().all()


@pytest.mark.parametrize("ref", ["urn:oasis:names:tc:SAML:2.0:ac:classes:Kerberos",
                                 "urn:rsa:names:tc:SAML:2.0:ac:classes:FIDO"],
                         ids=["unknown-class", "unreachable-for-this-account"])
def test_requested_authn_context_that_cannot_be_met_answers_no_authn_context(
        client, sp, user, ref):
    login(client)
    wanted = RequestedAuthnContext(authn_context_class_ref=[AuthnContextClassRef(text=ref)],
                                   comparison="exact")
    resume = client.get(sp.authn_redirect(IDP, requested_authn_context=wanted)
                        ).headers["Location"]
    page = client.get(resume)
    assert page.status_code == 200, page.text[:300]
    raw = base64.b64decode(form_fields(page.text)["SAMLResponse"]).decode()
    assert "status:NoAuthnContext" in raw and "Assertion" not in raw


# -- RelayState is data; signature wrapping of AuthnRequests ---------------------------------
HOSTILE_RELAY_STATES = ["https://evil.example/phish?next=/", "javascript:alert(document.domain)",
                        "//evil.example/x", '"><script>alert(1)</script>']


def _only_to_the_sp(page, sp: SamlTestSp, relay_state: str) -> None:
    """The answer is our page posting to the SP's ACS, the RelayState a field value only."""
    assert page.status_code == 200 and "Location" not in page.headers
    assert page.headers["Content-Security-Policy"].endswith(f"form-action {sp.base}")
    assert form_action(page.text) == sp.acs
    assert form_fields(page.text)["RelayState"] == relay_state
    assert "<script>alert" not in page.text  # escaped as an attribute value


@pytest.mark.parametrize("relay_state", HOSTILE_RELAY_STATES,
                         ids=["absolute-url", "javascript", "scheme-relative", "markup"])
def test_relay_state_is_reflected_only_as_data_to_the_sp(client, sp, user, relay_state):
    """SP-initiated, IdP-initiated (/saml/launch) and an error status alike: the RelayState
    goes back to the SP's ACS as a form field; we never redirect to it, not before sign-in,
    not after."""
    url = sp.authn_redirect(IDP, relay_state=relay_state)
    first = client.get(url)
    assert first.status_code == 302 and first.headers["Location"].startswith("/saml/resume/")
    resume = first.headers["Location"]
    assert client.get(resume).headers["Location"].startswith("/login")
    login(client, next_url=resume)
    _only_to_the_sp(client.get(resume), sp, relay_state)

    launched = client.get("/saml/launch", query_string={"sp": sp.entity_id,
                                                         "RelayState": relay_state})
    assert launched.status_code == 302
    assert launched.headers["Location"].startswith("/saml/resume/")
    _only_to_the_sp(client.get(launched.headers["Location"]), sp, relay_state)

    wanted = RequestedAuthnContext(authn_context_class_ref=[AuthnContextClassRef(
        text="urn:oasis:names:tc:SAML:2.0:ac:classes:Kerberos")], comparison="exact")
    refused = client.get(client.get(sp.authn_redirect(IDP, relay_state=relay_state,
                                                      requested_authn_context=wanted)
                                    ).headers["Location"])
    _only_to_the_sp(refused, sp, relay_state)
    assert "status:NoAuthnContext" in base64.b64decode(
        form_fields(refused.text)["SAMLResponse"]).decode()


def test_relay_state_of_a_logout_goes_only_to_the_sps_logout_endpoint(client, sp, user):
    name_id = _signed_in_at_sp(client, sp)
    _, request = sp.client().create_logout_request(SLO, IDP, name_id=name_id, sign=True,
                                                   sign_alg=xmldsig.SIG_RSA_SHA256,
                                                   digest_alg=xmldsig.DIGEST_SHA256)
    answer = client.post("/saml/slo", data={"SAMLRequest": base64.b64encode(
        str(request).encode()), "RelayState": "https://evil.example/after-logout"})
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(f"{sp.base}/slo?SAMLResponse=")
    assert query_of(location)["RelayState"] == "https://evil.example/after-logout"


def test_refused_requests_never_redirect_to_the_relay_state(client, sp, user):
    login(client)
    stale = sp.authn_redirect(IDP, relay_state="https://evil.example/")
    client.get(stale)
    for answer in (client.get(stale),  # replayed
                   client.get("/saml/sso", query_string={"SAMLRequest": "bad",
                                                         "RelayState": "https://evil.example/"}),
                   client.get("/saml/launch", query_string={
                       "sp": sp.entity_id, "RelayState": "https://evil.example/" + "x" * 2000})):
        assert answer.status_code == 400 and "Location" not in answer.headers
        assert "evil.example" not in answer.text


def _signed_post_request(sp: SamlTestSp) -> tuple[str, str]:
    """A signed HTTP-POST AuthnRequest (enveloped signature) and its ID."""
    xml = sp.authn_request_xml(IDP, SSO, sign=True, sign_alg=xmldsig.SIG_RSA_SHA256,
                               digest_alg=xmldsig.DIGEST_SHA256)
    return xml, xml.split(' ID="', 1)[1].split('"', 1)[0]


def _post_sso(client, xml: str):
    return client.post("/saml/sso", data={"SAMLRequest": base64.b64encode(xml.encode())})


def test_signature_wrapping_of_an_authn_request_is_refused(client, sp, user):
    """XSW on a signed AuthnRequest (HTTP-POST, the SP's metadata says it signs): the signed
    element must be the very request acted on. Each forgery carries the SP's genuine
    signature over an evil twin's content or place; none is kept, nothing is posted."""
    genuine, request_id = _signed_post_request(sp)
    body = genuine.split("?>", 1)[-1]
    found = re.search(r"<(\w+):Signature[ >].*</\1:Signature>", body, re.S)
    assert found, body[:500]
    signature, ds = found.group(0), found.group(1)
    unsigned = body.replace(signature, "")
    now = clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    head = ('<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
            f'xmlns:{ds}="http://www.w3.org/2000/09/xmldsig#" Version="2.0" '
            f'IssueInstant="{now}" Destination="{SSO}" ')
    issuer = f"<saml:Issuer>{sp.entity_id}</saml:Issuer>"
    forgeries = {
        # 1: the signed request's ID changed (a replay dressed as new)
        "id-changed": genuine.replace(f'ID="{request_id}"', 'ID="id-fresh-0001"'),
        # 2: an unsigned evil root wrapping the signed original in Extensions
        "wrapped-in-extensions": head + 'ID="id-evil-0002">' + issuer +
        f"<samlp:Extensions>{body}</samlp:Extensions></samlp:AuthnRequest>",
        # 3: the original's signature moved onto an evil root, the original (same ID
        #    referenced) kept inside Extensions for the Reference to resolve to
        "signature-moved": head + 'ID="id-evil-0003">' + issuer + signature +
        f"<samlp:Extensions>{unsigned}</samlp:Extensions></samlp:AuthnRequest>",
        # 4: an evil root taking the original's ID, the original after it (duplicate IDs)
        "duplicate-id": head + f'ID="{request_id}" ForceAuthn="false">' + issuer + signature
        + f"<samlp:Extensions>{unsigned}</samlp:Extensions></samlp:AuthnRequest>",
    }
    for name, forged in forgeries.items():
        answer = _post_sso(client, forged)
        assert answer.status_code == 400, (name, answer.status_code, answer.text[:300])
        assert "not valid (signature" in answer.text, name
        assert "SAMLResponse" not in answer.text and _requests() == 0, name
    assert _post_sso(client, genuine).status_code == 302  # the genuine one is accepted


# -- per-SP attribute names (saml.toml attribute_profile / attribute_names) -------------------
def sp_policy(monkeypatch, entity_id: str, **values) -> None:
    """saml.toml [sps."<entity_id>"] with these values, for this test."""
    rt = runtime()
    saml = rt.policy.saml
    sps = {**saml.sps, entity_id: dataclasses.replace(saml.sp(entity_id), **values)}
    monkeypatch.setattr(rt, "policy", dataclasses.replace(
        rt.policy, saml=dataclasses.replace(saml, sps=sps)))


def _attributes_received(client, sp: SamlTestSp) -> tuple[dict, dict]:
    """Sign in SP-initiated; ({Name: (NameFormat, values)} of the verified assertion, the SP's
    own reading of it (pysaml2's attribute maps))."""
    url = sp.authn_redirect(IDP)
    _, fields = _sign_in_and_post(client, sp, url)
    parsed = sp.client().parse_authn_request_response(
        fields["SAMLResponse"], BINDING_HTTP_POST, outstanding={_request_id(url): sp.acs})
    statement = parsed.assertion.attribute_statement[0]
    return ({a.name: (a.name_format, [v.text for v in a.attribute_value])
             for a in statement.attribute}, parsed.get_identity())


URI, BASIC = NAME_FORMAT_URI, NAME_FORMAT_BASIC


def test_an_sp_with_the_eduperson_profile_receives_oid_names(client, sp, user, monkeypatch):
    sp_policy(monkeypatch, sp.entity_id, attribute_profile="eduperson",
              attribute_names={"facility": "urn:example:facility"})
    received, ava = _attributes_received(client, sp)
    assert received["urn:oid:0.9.2342.19200300.100.1.3"] == (URI, [user.email])
    assert received["urn:oid:2.5.4.42"] == (URI, ["Ana"])
    assert received["urn:oid:2.5.4.4"] == (URI, [user.family_name])
    assert received["urn:oid:0.9.2342.19200300.100.1.1"] == (URI, ["drsmith"])
    assert received["urn:oid:2.16.840.1.113883.4.6"] == (URI, [user.npi])
    assert received["urn:example:facility"] == (URI, ["General Hospital"])
    assert received["roles"] == (BASIC, ["physician"])  # not renamed: our Name, basic
    assert "email" not in received and "given_name" not in received
    # the SP's own eduPerson map reads them as mail, givenName, sn, uid
    assert ava["mail"] == [user.email] and ava["givenName"] == ["Ana"]
    assert ava["uid"] == ["drsmith"]


def test_an_sp_with_the_microsoft_profile_receives_claim_uris(client, sp, user, monkeypatch):
    sp_policy(monkeypatch, sp.entity_id, attribute_profile="microsoft")
    received, _ = _attributes_received(client, sp)
    claims = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
    assert received[claims + "emailaddress"] == (URI, [user.email])
    assert received[claims + "givenname"] == (URI, ["Ana"])
    assert received[claims + "surname"] == (URI, [user.family_name])
    assert received[claims + "name"] == (URI, ["drsmith"])
    assert received["http://schemas.microsoft.com/ws/2008/06/identity/claims/role"] == \
        (URI, ["physician"])
    assert received["npi"] == (BASIC, [user.npi])
    # another SP, with no profile, still gets our own names
    assert policy_names_of("http://other.test/metadata")["email"] == "email"


def policy_names_of(entity_id: str) -> dict[str, str]:
    return runtime().policy.saml.attribute_names(entity_id)


# -- assertion encryption (saml.toml encrypt_assertions) ---------------------------------------
@pytest.fixture
def encrypting_sp(ctx, client, env, tmp_path: Path) -> SamlTestSp:
    """A second SP whose metadata carries a KeyDescriptor use="encryption"."""
    key, cert = make_keypair(tmp_path, "enc")
    made = SamlTestSp("http://enc.test/metadata", key, cert, base="http://enc.test",
                      encrypts=True)
    made.idp_metadata = client.get("/saml/metadata").text
    assert b'use="encryption"' in made.metadata()
    path = tmp_path / "enc.xml"
    path.write_bytes(made.metadata())
    code, out = _cli(env, "saml", "sps", "create", "--metadata-file", str(path), "--json")
    assert code == 0, out
    return made


@pytest.mark.parametrize("mode", ["if_key", "required"])
def test_assertions_are_encrypted_to_an_sp_with_an_encryption_key(
        client, encrypting_sp, user, monkeypatch, mode):
    sp = encrypting_sp
    sp_policy(monkeypatch, sp.entity_id, encrypt_assertions=mode)
    url = sp.authn_redirect(IDP)
    _, fields = _sign_in_and_post(client, sp, url)
    raw = base64.b64decode(fields["SAMLResponse"]).decode()
    assert "EncryptedAssertion" in raw
    assert 'Algorithm="http://www.w3.org/2009/xmlenc11#aes256-gcm"' in raw
    assert 'Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"' in raw
    assert user.email not in raw and "physician" not in raw and ":Assertion " not in raw
    # the SP decrypts with its private key; inside, the assertion is signed as always
    parsed = sp.client().parse_authn_request_response(
        fields["SAMLResponse"], BINDING_HTTP_POST, outstanding={_request_id(url): sp.acs})
    assert parsed.get_identity()["email"] == [user.email]
    assert parsed.assertion.signature is not None
    db.session.rollback()
    detail = db.session.execute(select(AuditEvent.detail).where(
        AuditEvent.event == "saml.sso")).scalar_one()
    assert detail["encrypted"] is True


def test_an_encrypted_assertion_is_useless_without_the_sps_key(client, encrypting_sp, user,
                                                                monkeypatch, tmp_path):
    sp = encrypting_sp
    sp_policy(monkeypatch, sp.entity_id, encrypt_assertions="if_key")
    url = sp.authn_redirect(IDP)
    _, fields = _sign_in_and_post(client, sp, url)
    other_key, _ = make_keypair(tmp_path, "thief")
    thief = SamlTestSp(sp.entity_id, other_key, sp.cert_file, base=sp.base, encrypts=True,
                       idp_metadata=sp.idp_metadata)
    try:
        parsed = thief.client().parse_authn_request_response(
            fields["SAMLResponse"], BINDING_HTTP_POST, outstanding={_request_id(url): sp.acs})
    except Exception:  # noqa: BLE001 - pysaml2's DecryptError family: nothing read
        parsed = None
    # pysaml2 answers a Response whose assertion it could not decrypt: nothing in it
    assert parsed is None or (parsed.assertion is None and parsed.get_identity() == {})
    assert user.email not in base64.b64decode(fields["SAMLResponse"]).decode()


def test_policy_requiring_encryption_sends_nothing_to_an_sp_without_a_key(
        client, sp, encrypting_sp, user, monkeypatch):
    """`required`: an SP whose metadata has no encryption key gets no assertion (a 403 page,
    audited); `if_key` sends it a plain (signed) one; `never` never encrypts."""
    sp_policy(monkeypatch, sp.entity_id, encrypt_assertions="required")
    first = client.get(sp.authn_redirect(IDP))
    resume = first.headers["Location"]
    login(client, next_url=resume)
    page = client.get(resume)
    assert page.status_code == 403 and "encrypted" in page.text
    assert "SAMLResponse" not in page.text
    db.session.rollback()
    assert db.session.execute(select(func.count()).select_from(SamlParticipant)
                              ).scalar_one() == 0
    assert db.session.execute(select(AuditEvent.detail).where(
        AuditEvent.event == "saml.sso_denied")).scalar_one()["reason"] == "no_encryption_key"

    sp_policy(monkeypatch, sp.entity_id, encrypt_assertions="if_key")
    launched = client.get("/saml/launch", query_string={"sp": sp.entity_id})
    page = client.get(launched.headers["Location"])
    raw = base64.b64decode(form_fields(page.text)["SAMLResponse"]).decode()
    assert "EncryptedAssertion" not in raw and user.email in raw

    sp_policy(monkeypatch, encrypting_sp.entity_id, encrypt_assertions="never")
    launched = client.get("/saml/launch", query_string={"sp": encrypting_sp.entity_id})
    page = client.get(launched.headers["Location"])
    raw = base64.b64decode(form_fields(page.text)["SAMLResponse"]).decode()
    assert "EncryptedAssertion" not in raw and user.email in raw


# -- front-channel logout (SPs without a SOAP SingleLogoutService) ----------------------------
@pytest.fixture
def front_sp(ctx, client, env, tmp_path: Path) -> SamlTestSp:
    """An SP whose metadata lists only an HTTP-Redirect SingleLogoutService."""
    key, cert = make_keypair(tmp_path, "front")
    made = SamlTestSp("http://front.test/metadata", key, cert, base="http://front.test",
                      soap=False)
    made.idp_metadata = client.get("/saml/metadata").text
    assert b"SOAP" not in made.metadata()
    path = tmp_path / "front.xml"
    path.write_bytes(made.metadata())
    code, out = _cli(env, "saml", "sps", "create", "--metadata-file", str(path), "--json")
    assert code == 0, out
    return made


def _sso_at_sp(client, sp: SamlTestSp) -> NameID:
    """Already signed in: the SP's AuthnRequest is answered without a password."""
    url = sp.authn_redirect(IDP)
    page = client.get(client.get(url).headers["Location"])
    assert page.status_code == 200 and form_action(page.text) == sp.acs, page.text[:300]
    return sp.client().parse_authn_request_response(
        form_fields(page.text)["SAMLResponse"], BINDING_HTTP_POST,
        outstanding={_request_id(url): sp.acs}).name_id


def _chain_step(client, response) -> str:
    """Follow our way to /saml/slo/continue (a redirect, or after the logout confirmation
    form a page that navigates by itself: meta refresh and a link); the Location it sends the
    browser to."""
    if response.status_code == 200:
        found = re.search(r'<a href="([^"]+)" id="logout-continue"', response.text)
        assert found, response.text[:500]
        url = html.unescape(found.group(1))
        assert f'content="0;url={found.group(1)}"' in response.text
    else:
        assert response.status_code in (302, 303), response.text[:300]
        url = response.headers["Location"]
    assert url.startswith("/saml/slo/continue?chain="), url
    step = client.get(url)
    assert step.status_code == 302, step.text[:300]
    return step.headers["Location"]


def _front_sp_logs_out(client, sp: SamlTestSp, location: str, name_id: NameID):
    """The SP's side: our signed Redirect LogoutRequest for its user, then its LogoutResponse
    back to /saml/slo with our RelayState; our answer to that."""
    assert location.startswith(f"{sp.base}/slo?SAMLRequest=")
    got = query_of(location)
    request = sp.client().parse_logout_request(
        got["SAMLRequest"], BINDING_HTTP_REDIRECT, relay_state=got["RelayState"],
        sigalg=got["SigAlg"], signature=got["Signature"])
    assert request.message.name_id.text == name_id.text
    response = sp.client().create_logout_response(request.message, [BINDING_HTTP_REDIRECT])
    info = sp.client().apply_binding(BINDING_HTTP_REDIRECT, str(response), SLO,
                                     got["RelayState"], response=True)
    back = urlsplit(dict(info["headers"])["Location"])
    return client.get(f"{back.path}?{back.query}")


def _logout_events() -> list[tuple[str | None, str | None]]:
    db.session.rollback()
    return [(d.get("sp"), d.get("outcome")) for d in db.session.execute(
        select(AuditEvent.detail).where(AuditEvent.event == "saml.logout_sent")).scalars()]


def test_logout_at_the_idp_takes_the_browser_through_a_front_channel_sp(
        client, front_sp, user):
    name_id = _signed_in_at_sp(client, front_sp)
    page = client.get("/logout")
    ended = client.post("/logout", data={"confirm": "yes", "csrf_token": csrf_from(page.text)})
    assert _live_sessions() == 0
    location = _chain_step(client, ended)
    back = _front_sp_logs_out(client, front_sp, location, name_id)
    done = client.get(back.headers["Location"]) if back.status_code == 303 else back
    assert done.status_code == 200 and "You are signed out" in done.text
    assert _logout_events() == [(front_sp.entity_id, "front_channel")]
    # the chain is over: its link does nothing more
    again = client.get(back.headers["Location"])
    assert again.status_code == 200 and "SAMLRequest" not in again.text
    assert _logout_events() == [(front_sp.entity_id, "front_channel")]


def test_an_sps_logout_goes_through_the_front_channel_sp_then_answers_it(
        client, sp, front_sp, user):
    """SP-initiated logout at `sp`: the other SP of the browser's session, front-channel
    only, is told through the browser first; then `sp` gets its signed LogoutResponse with
    its RelayState."""
    name_id = _signed_in_at_sp(client, sp)
    front_name_id = _sso_at_sp(client, front_sp)
    request_id, request = sp.client().create_logout_request(SLO, IDP, name_id=name_id, sign=True,
                                                   sign_alg=xmldsig.SIG_RSA_SHA256,
                                                   digest_alg=xmldsig.DIGEST_SHA256)
    asked = client.post("/saml/slo", data={"SAMLRequest": base64.b64encode(
        str(request).encode()), "RelayState": "bye"})
    assert _live_sessions() == 0
    back = _front_sp_logs_out(client, front_sp, _chain_step(client, asked), front_name_id)
    answer = _chain_step(client, back)
    assert answer.startswith(f"{sp.base}/slo?SAMLResponse=")
    got = query_of(answer)
    assert got["RelayState"] == "bye" and got["Signature"]
    parsed = sp.client().parse_logout_request_response(got["SAMLResponse"],
                                                       BINDING_HTTP_REDIRECT)
    assert parsed.response.in_response_to == request_id
    assert _logout_events() == [(front_sp.entity_id, "front_channel")]


def test_rp_initiated_logout_goes_through_the_front_channel_sp_then_to_the_rp(
        client, front_sp, user):
    rp = make_client(post_logout_redirect_uris=["https://rp.example/bye"])
    name_id = _signed_in_at_sp(client, front_sp)
    code, verifier, _ = get_code(client, rp, scope="openid")
    id_token = exchange(client, rp, code, verifier).get_json()["id_token"]
    ended = client.get("/logout", query_string={
        "id_token_hint": id_token, "post_logout_redirect_uri": "https://rp.example/bye",
        "state": "s1"})
    back = _front_sp_logs_out(client, front_sp, _chain_step(client, ended), name_id)
    assert _chain_step(client, back) == "https://rp.example/bye?state=s1"


def test_front_channel_chain_bad_input(client, front_sp, user):
    """No chain, a forged or overlong chain name, a stray LogoutResponse: the signed-out page,
    no step taken, no 500; a session ended with no browser to use leaves the SP recorded as
    not told."""
    for url in ("/saml/slo/continue", "/saml/slo/continue?chain=nope",
                "/saml/slo/continue?chain=" + "x" * 5000,
                "/saml/slo?SAMLResponse=abc&RelayState=" + "y" * 500,
                "/saml/slo?SAMLResponse=abc&RelayState=https://evil.example/"):
        answer = client.get(url)
        if answer.status_code == 303:
            assert answer.headers["Location"].startswith("/saml/slo/continue?chain=")
            answer = client.get(answer.headers["Location"])
        assert answer.status_code == 200 and "You are signed out" in answer.text, url
    name_id = _signed_in_at_sp(client, front_sp)
    page = client.get("/logout")
    ended = client.post("/logout", data={"confirm": "yes", "csrf_token": csrf_from(page.text)})
    forged = client.get("/saml/slo/continue?chain=forged")
    assert forged.status_code == 200 and _logout_events() == []
    _front_sp_logs_out(client, front_sp, _chain_step(client, ended), name_id)


def test_a_session_ended_with_no_chain_records_the_front_channel_sp_not_told(
        client, front_sp, user):
    """Sign-out everywhere (from the account pages) takes the browser through no SP: the
    front-channel SP is recorded as not told, after the response."""
    _signed_in_at_sp(client, front_sp)
    page = client.get("/account/sessions")
    done = client.post("/account/sessions/end-all", data={"csrf_token": csrf_from(page.text)})
    assert done.status_code == 302 and done.headers["Location"] == "/login"
    assert _live_sessions() == 0
    assert _logout_events() == [(front_sp.entity_id, "no_soap_endpoint")]
