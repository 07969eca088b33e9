"""EPCS keys (21 CFR 1311.115(b)) through the real enrolment path: a software security key
builds real attestation objects (CBOR, "packed", signed by an attestation certificate of a test
CA carrying the FIDO extensions), the IdP verifies them with py_webauthn against the trust
anchors and AAGUID list of policies/epcs_keys.toml, and the EPCS ceremony counts only what
passed: a synced passkey, a platform authenticator (unless policy allows it), a key without
attestation, with an untrusted chain or with an AAGUID not on the list is refused; the attested
roaming key of a listed model is accepted and signs."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from webauthn.helpers import bytes_to_base64url

from idp import clock
from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.context import policy, runtime
from idp.epcs import keys
from idp.epcs import service as epcs
from idp.epcs.models import EpcsCeremony, EpcsKey
from idp.extensions import db
from idp.mfa.models import Factor
from tests.helpers import (
    PASSWORD,
    auth_params,
    csrf_from,
    exchange,
    make_client,
    make_user,
    pkce,
    query,
)
from tests.integration.test_webauthn_service import (
    ORIGIN,
    SoftAuthenticator,
    password_step,
    post_json,
    seed,
    totp_step,
)

LISTED = "6d44ba9b-f6ec-2e49-b930-0c8fe920cb73"     # the test policy's FIPS-validated model
UNLISTED = "0bb43545-fd2c-4185-87dd-feb0b2916ace"
FIDO_AAGUID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
EPCS = "urn:healthidp:acr:epcs"
RX = "RX-9002"


# -- a test PKI: attestation root CA and batch certificates --------------------------------
def _name(cn: str, ou: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Key Vendor")]
    if ou:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name([*parts, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclasses.dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def make(cls, cn: str, parent: Ca | None = None, *, ca: bool = True,
             key: ec.EllipticCurvePrivateKey | None = None, days: int = 365) -> Ca:
        """A root (self-signed) or, with `parent`, an intermediate it issues."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(_name(cn))
                .issuer_name(parent.cert.subject if parent else _name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=2))
                .not_valid_after(now + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .sign(parent.key if parent else key, hashes.SHA256()))
        return cls(key, cert)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def batch(self, aaguid: str | None, *, ou: str = "Authenticator Attestation"
              ) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        """An attestation (batch) key and its certificate (DER) as WebAuthn §8.2.1 wants it:
        version 3, OU "Authenticator Attestation", CA false, id-fido-gen-ce-aaguid."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (x509.CertificateBuilder().subject_name(_name("Test Key Batch", ou))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True))
        if aaguid:
            builder = builder.add_extension(x509.UnrecognizedExtension(
                FIDO_AAGUID_OID, b"\x04\x10" + uuid.UUID(aaguid).bytes), critical=False)
        return key, builder.sign(self.key, hashes.SHA256()).public_bytes(
            serialization.Encoding.DER)


VENDOR = Ca.make("Test Key Vendor Attestation Root")
STRANGER = Ca.make("Someone Else's Attestation Root")


class AttestedKey(SoftAuthenticator):
    """A security key that attests: "packed" with x5c (its batch certificate from `ca`),
    "self" (packed, no x5c) or "none"; flags BE/BS, the attachment and transports the
    browser reports are the test's choice."""

    def __init__(self, *, aaguid: str = LISTED, ca: Ca = VENDOR, fmt: str = "packed",
                 backup_eligible: bool = False, backup_state: bool = False,
                 attachment: str = "cross-platform", transports: tuple[str, ...] = ("usb",),
                 cert_aaguid: str | None = None) -> None:
        super().__init__()
        self.aaguid, self.fmt = aaguid, fmt
        self.flags = (0x08 if backup_eligible else 0) | (0x10 if backup_state else 0)
        self.attachment, self.transports = attachment, list(transports)
        self.batch_key, self.batch_cert = ca.batch(cert_aaguid or aaguid)

    def _auth_data(self, rp_id: str, *, uv: bool, count: int, attested: bool) -> bytes:
        flags = 0x01 | (0x04 if uv else 0) | (0x40 if attested else 0) | self.flags
        data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + count.to_bytes(4, "big")
        if attested:
            data += uuid.UUID(self.aaguid).bytes + len(self.credential_id).to_bytes(2, "big") \
                + self.credential_id + self.cose_key()
        return data

    def create(self, options: dict, *, uv: bool = True, origin: str = ORIGIN,
               rp_id: str | None = None) -> dict:
        self.user_handle = options["user"]["id"]
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        auth_data = self._auth_data(rp_id or options["rp"]["id"], uv=uv, count=self.sign_count,
                                    attested=True)
        signed = auth_data + hashlib.sha256(client_data).digest()
        if self.fmt == "none":
            statement: dict = {}
        elif self.fmt == "self":
            statement = {"alg": -7, "sig": self.key.sign(signed, ec.ECDSA(hashes.SHA256()))}
        else:
            statement = {"alg": -7, "x5c": [self.batch_cert],
                         "sig": self.batch_key.sign(signed, ec.ECDSA(hashes.SHA256()))}
        attestation = cbor2.dumps({"fmt": "packed" if self.fmt == "self" else self.fmt,
                                   "attStmt": statement, "authData": auth_data})
        return {"id": self.id, "rawId": self.id, "type": "public-key",
                "authenticatorAttachment": self.attachment, "clientExtensionResults": {},
                "response": {"clientDataJSON": bytes_to_base64url(client_data),
                             "attestationObject": bytes_to_base64url(attestation),
                             "transports": self.transports}}


# -- policy and helpers --------------------------------------------------------------------
def set_key_policy(monkeypatch: pytest.MonkeyPatch, **changes: object) -> None:
    """policies/epcs_keys.toml as the test wants it (this app's policy, for this test)."""
    rules = dataclasses.replace(policy().epcs.keys, **changes)
    monkeypatch.setattr(runtime(), "policy", dataclasses.replace(
        policy(), epcs=dataclasses.replace(policy().epcs, keys=rules)))


def trust_test_vendor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test vendor's root trusted and LISTED on the list of validated models."""
    set_key_policy(monkeypatch, roots=(VENDOR.pem,), root_files=("test-vendor.pem",),
                   aaguids={LISTED: "Test Key 5 FIPS (FIPS 140-3 certificate #0000)"})


@pytest.fixture
def trusted(ctx, monkeypatch):
    trust_test_vendor(monkeypatch)


def seed_epcs_key(user, key: SoftAuthenticator, aaguid: str = LISTED) -> Factor:
    """A credential as EPCS key enrolment leaves it (for ceremony tests that do not repeat
    the enrolment); the policy must list `aaguid` (the `trusted` fixture)."""
    factor = seed(user, key)
    factor.transports, factor.aaguid = ["usb"], aaguid
    db.session.add(EpcsKey(factor_id=factor.id, user_id=user.id, aaguid=aaguid,
                           model="Test key", attestation_fmt="packed",
                           attestation_verified=True, attestation_cert_sha256="0" * 64,
                           attachment="cross-platform", backup_eligible=False,
                           backup_state=False, enrolled_at=clock.now()))
    db.session.commit()
    return factor


def signed_in_prescriber(http, username: str = "drsmith"):
    user = make_user(username)
    password_step(http, username)
    totp_step(http, username)
    return user


def enroll(http, key: SoftAuthenticator, label: str = "Prescribing key"):
    page = http.get("/epcs/keys")
    assert page.status_code == 200, page.text
    token = csrf_from(page.text)
    options = post_json(http, "/epcs/keys/options", {}, token)
    assert options.status_code == 200, options.text
    return options.get_json(), post_json(
        http, "/epcs/keys", {"credential": key.create(options.get_json()), "label": label},
        token)


def refusals() -> list[dict]:
    return [e.detail for e in db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "epcs.key_refused").order_by(AuditEvent.seq)).scalars()]


def saved(key: SoftAuthenticator) -> Factor | None:
    db.session.expire_all()
    return db.session.execute(select(Factor).where(Factor.credential_id == key.id)
                              ).scalar_one_or_none()


# -- enrolment -----------------------------------------------------------------------------
def test_the_attested_roaming_key_of_a_listed_model_is_accepted(trusted, client, mailbox):
    user = signed_in_prescriber(client)
    key = AttestedKey()
    options, done = enroll(client, key)
    # Enrolment asks for attestation and a roaming key; everyday passkeys keep "none".
    assert options["attestation"] == "direct"
    assert options["authenticatorSelection"]["authenticatorAttachment"] == "cross-platform"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    everyday = post_json(client, "/mfa/enroll/webauthn/options", {},
                         csrf_from(client.get("/mfa/enroll/webauthn").text)).get_json()
    assert everyday["attestation"] == "none"
    assert "authenticatorAttachment" not in everyday["authenticatorSelection"]

    assert done.status_code == 200, done.text
    assert done.get_json()["redirect"] == "/epcs/keys?added=1"
    factor = saved(key)
    assert factor is not None and factor.kind == "webauthn" and factor.user_id == user.id
    stored = db.session.get(EpcsKey, factor.id)
    assert (stored.aaguid, stored.attestation_fmt, stored.attestation_verified,
            stored.backup_eligible, stored.backup_state, stored.attachment) == \
        (LISTED, "packed", True, False, False, "cross-platform")
    assert stored.attestation_cert_sha256 == hashlib.sha256(key.batch_cert).hexdigest()
    assert stored.model.startswith("Test Key 5 FIPS")
    page = client.get("/epcs/keys?added=1")
    assert "Test Key 5 FIPS" in page.text and 'id="epcs-key-added"' in page.text
    [enrolled] = [e.detail for e in db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "epcs.key_enrolled")).scalars()]
    assert enrolled["aaguid"] == LISTED and enrolled["fmt"] == "packed"
    assert any("security key for signing controlled-substance" in m.get_payload(decode=True)
               .decode() for m in mailbox.messages), "the user is told a key was added"


@pytest.mark.parametrize("key,reason,words", [
    (lambda: AttestedKey(fmt="none"), "no_attestation", "did not prove its make and model"),
    (lambda: AttestedKey(fmt="self"), "no_attestation", "did not prove its make and model"),
    (lambda: AttestedKey(aaguid=UNLISTED), "model_not_listed", "not on your organization"),
    (lambda: AttestedKey(cert_aaguid=UNLISTED), "untrusted", "could not be verified"),
    (lambda: AttestedKey(backup_eligible=True), "synced", "synced passkey"),
    (lambda: AttestedKey(backup_eligible=True, backup_state=True), "synced", "synced passkey"),
    (lambda: AttestedKey(attachment="platform", transports=("internal",)), "platform",
     "built-in authenticator"),
    (lambda: AttestedKey(transports=("internal",)), "platform", "built-in authenticator"),
], ids=["none-attestation", "self-attestation", "aaguid-not-listed",
        "cert-aaguid-mismatch", "synced-passkey", "synced-and-backed-up",
        "platform-attachment", "transport-internal"])
def test_a_key_that_does_not_qualify_is_refused_and_not_kept(trusted, client, key, reason,
                                                            words):
    signed_in_prescriber(client)
    refused = key()
    _, done = enroll(client, refused)
    assert done.status_code == 400, done.text
    assert words in done.get_json()["error"]
    assert saved(refused) is None
    assert db.session.execute(select(EpcsKey)).first() is None
    assert [r["reason"] for r in refusals()] == [reason]


def test_a_chain_to_an_untrusted_root_is_refused(trusted, client):
    signed_in_prescriber(client)
    stranger = AttestedKey(ca=STRANGER)
    _, done = enroll(client, stranger)
    assert done.status_code == 400 and saved(stranger) is None
    assert "could not be verified" in done.get_json()["error"]
    assert [r["reason"] for r in refusals()] == ["untrusted"]


def test_without_trust_anchors_no_key_is_accepted(ctx, client, monkeypatch):
    """The shipped policy lists no root: py_webauthn would check no chain at all, so the IdP
    refuses rather than trusting any certificate."""
    set_key_policy(monkeypatch, roots=(), aaguids={LISTED: "Test key"})
    signed_in_prescriber(client)
    _, done = enroll(client, AttestedKey())
    assert done.status_code == 400 and "could not be verified" in done.get_json()["error"]
    assert [r["reason"] for r in refusals()] == ["untrusted"]


def test_a_platform_authenticator_counts_when_policy_allows_it(trusted, client, monkeypatch):
    set_key_policy(monkeypatch, allow_platform_biometric=True)
    signed_in_prescriber(client)
    platform = AttestedKey(attachment="platform", transports=("internal",))
    _, done = enroll(client, platform)
    assert done.status_code == 200, done.text
    stored = db.session.get(EpcsKey, saved(platform).id)
    assert stored.attachment == "platform"
    # Policy withdrawn: the key stops counting at once.
    set_key_policy(monkeypatch, allow_platform_biometric=False)
    assert epcs.hardware_factors(stored_user(stored)) == []


def stored_user(key: EpcsKey) -> User:
    return db.session.get(User, key.user_id)


def test_enrolment_needs_a_recent_sign_in_of_a_prescriber(trusted, client, app, frozen):
    page = client.get("/epcs/keys")
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    signed_in_prescriber(client)
    token = csrf_from(client.get("/epcs/keys").text)
    frozen.advance(seconds=policy().mfa.reauth_window + 1)
    late = post_json(client, "/epcs/keys/options", {}, token)
    assert late.status_code == 401 and "/login" in late.get_json()["redirect"]
    assert client.get("/epcs/keys").status_code == 302  # the page asks to sign in again

    admin = app.test_client()
    make_user("it.admin", npi=None, role="admin")
    password_step(admin, "it.admin")
    totp_step(admin, "it.admin")
    page = admin.get("/epcs/keys")
    assert page.status_code == 200 and "Only prescribers" in page.text
    token = csrf_from(admin.get("/account").text)
    assert post_json(admin, "/epcs/keys/options", {}, token).status_code == 401


def test_the_chain_to_a_trust_anchor(ctx):
    """keys.anchored: through an intermediate CA, not through a certificate that is no CA;
    a self-signed attestation certificate re-issued with the same name and key (Chromium's
    virtual authenticator) still chains to the one installed; another key does not."""
    _, leaf = VENDOR.batch(LISTED)
    assert keys.anchored((leaf,), (VENDOR.pem,))
    assert not keys.anchored((leaf,), (STRANGER.pem,))
    assert not keys.anchored((leaf,), ())
    middle = Ca.make("Vendor Intermediate", VENDOR)
    _, below = middle.batch(LISTED)
    assert keys.anchored((below, middle.der), (VENDOR.pem,))
    assert keys.anchored((below,), (middle.pem,))
    assert not keys.anchored((below,), (VENDOR.pem,))  # the intermediate is missing
    no_ca = Ca.make("Not a CA", VENDOR, ca=False)
    _, under = no_ca.batch(LISTED)
    assert not keys.anchored((under, no_ca.der), (VENDOR.pem,))
    pinned = Ca.make("Batch Certificate", ca=False)
    again = Ca.make("Batch Certificate", ca=False, key=pinned.key, days=400)
    assert again.der != pinned.der
    assert keys.anchored((again.der,), (pinned.pem,))
    other = Ca.make("Batch Certificate", ca=False)
    assert not keys.anchored((other.der,), (pinned.pem,))
    assert not keys.anchored((b"not a certificate",), (VENDOR.pem,))


# -- the ceremony counts only EPCS keys ----------------------------------------------------
def grant(user):
    admin_one = make_user("admin.one", npi=None, role="admin")
    admin_two = make_user("admin.two", npi=None, role="admin")
    epcs.approve(epcs.propose(user, admin_one), admin_two)
    db.session.commit()


def signing_request(http, rp):
    verifier, challenge = pkce()
    params = auth_params(rp, challenge, scope="openid profile roles", acr_values=EPCS,
                         max_age="0", binding_message=RX)
    return http.get("/authorize?" + urlencode(params)), verifier


def test_the_ceremony_refuses_an_everyday_passkey_and_signs_with_the_epcs_key(
        trusted, client, monkeypatch):
    user = signed_in_prescriber(client)
    passkey = SoftAuthenticator()          # an everyday passkey: attestation "none"
    seed(user, passkey)
    grant(user)
    rp = make_client()

    refused, _ = signing_request(client, rp)
    location = refused.headers["Location"]
    assert query(location)["error"] == "unmet_authentication_requirements"
    assert "enrolled for prescribing" in query(location)["error_description"]

    key = AttestedKey()
    _, done = enroll(client, key)
    assert done.status_code == 200, done.text
    started, verifier = signing_request(client, rp)
    ceremony_url = started.headers["Location"]
    assert ceremony_url.startswith("/epcs/ceremony/")
    page = client.get(ceremony_url)
    client.post(ceremony_url, data={"password": PASSWORD,
                                    "csrf_token": csrf_from(page.text)})
    challenge = client.get("/mfa/challenge")
    token = csrf_from(challenge.text)
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    assert [c["id"] for c in options["allowCredentials"]] == [key.id]  # not the passkey
    # The passkey's assertion is not accepted for the ceremony, whatever the browser sends.
    wrong = post_json(client, "/mfa/webauthn/verify", {"credential": passkey.get(options)},
                      token)
    assert wrong.status_code == 400
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    done = post_json(client, "/mfa/webauthn/verify", {"credential": key.get(options)}, token)
    assert done.status_code == 200, done.text
    answer = client.get(done.get_json()["redirect"])
    code = query(answer.headers["Location"])["code"]
    body = exchange(client, rp, code, verifier).get_json()
    assert "id_token" in body
    ceremony = db.session.execute(select(EpcsCeremony)).scalars().all()[-1]
    assert ceremony.acr == EPCS


def test_a_model_taken_off_the_list_stops_counting(trusted, client, monkeypatch):
    user = signed_in_prescriber(client)
    key = AttestedKey()
    seed_epcs_key(user, key)
    assert [f.credential_id for f in epcs.hardware_factors(user)] == [key.id]
    set_key_policy(monkeypatch, aaguids={})
    assert epcs.hardware_factors(user) == []
    page = client.get("/epcs/keys")
    assert "no longer counts" in page.text


def test_a_ceremony_finished_with_a_credential_that_is_not_an_epcs_key_is_not_met(
        trusted, client):
    """Defence in depth: even if a non-EPCS credential finished the attempt, complete()
    counts it for nothing."""
    user = signed_in_prescriber(client)
    passkey = SoftAuthenticator()
    factor = seed(user, passkey)
    now = clock.now()
    ceremony = EpcsCeremony(id=secrets.token_urlsafe(12), user_id=user.id, client_id="c",
                            request_key="k", binding_message=RX, next_url="/",
                            attempt_id="attempt-x", created_at=now,
                            expires_at=now + timedelta(minutes=5), amr=[])
    db.session.add(ceremony)
    db.session.flush()

    class Attempt:
        id = "attempt-x"

    assert epcs.complete(Attempt(), user, "webauthn", ["pwd", "hwk", "user", "mfa"],
                         factor) is False
    assert ceremony.acr is None
