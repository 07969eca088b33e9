"""A real PKI for the UDAP tests, built with `cryptography`: a community root, an intermediate
that issues the client and server certificates and a CRL revoking one of them, an expired
client certificate, and a second (untrusted) root with its own client.

Everything is made once per process (RSA key generation is the slow part) and is plain data:
PEM bytes for anchors and CRLs (what an operator installs), keys and certificates for the
signers (what a UDAP client holds)."""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_URI = "https://apps.example.org/udap/scheduler"
OTHER_URI = "https://apps.example.org/udap/other"
B2B_URI = "https://payer.example.org/udap/b2b"

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Holder:
    """A certificate, its private key, and the chain it is sent with (x5c: leaf first)."""

    cert: x509.Certificate
    key: Key
    chain: tuple[x509.Certificate, ...]  # the intermediates after the leaf

    @property
    def alg(self) -> str:
        return "RS256" if isinstance(self.key, rsa.RSAPrivateKey) else "ES256"

    def x5c(self) -> list[str]:
        return [b64(c) for c in (self.cert, *self.chain)]

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "UDAP Test Community"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue(cn: str, key: Key, *, issuer: tuple[x509.Certificate, Key] | None = None,
          ca: bool = False, san: str | None = None, not_before: datetime | None = None,
          not_after: datetime | None = None, serial: int | None = None,
          digital_signature: bool = True) -> x509.Certificate:
    now = datetime.now(UTC)
    not_before = not_before or now - timedelta(days=1)
    not_after = not_after or now + timedelta(days=365)
    subject = _name(cn)
    issuer_name, signing_key = (subject, key) if issuer is None else (issuer[0].subject,
                                                                       issuer[1])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False)
    if ca:
        builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                         critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                False, False), critical=True))
    else:
        builder = (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                         critical=True)
                   .add_extension(x509.KeyUsage(digital_signature, False, not digital_signature,
                                                False, False, False, False, False, False),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                         ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False))
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]),
                critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@dataclass(frozen=True, eq=False)
class Pki:
    root: x509.Certificate
    intermediate: x509.Certificate
    crl: x509.CertificateRevocationList
    client: Holder            # SAN = CLIENT_URI
    other: Holder             # SAN = OTHER_URI (a second client of the same community)
    b2b: Holder               # SAN = B2B_URI (client_credentials with hl7-b2b)
    revoked: Holder           # SAN = CLIENT_URI, on the CRL
    expired: Holder           # SAN = CLIENT_URI, not_after in the past
    no_signature: Holder      # SAN = CLIENT_URI, key usage without digitalSignature
    untrusted: Holder         # SAN = CLIENT_URI, under a root nobody configured
    untrusted_root: x509.Certificate

    def server(self, issuer: str) -> Holder:
        """The authorization server's certificate (SAN URI = its issuer)."""
        return _server(issuer)

    def untrusted_server(self, issuer: str) -> Holder:
        """An authorization server's certificate (SAN URI = its issuer) under the root nobody
        configured."""
        return _untrusted_server(issuer)

    def anchor_pem(self) -> bytes:
        return pem(self.root)

    def crl_pem(self) -> bytes:
        return self.crl.public_bytes(serialization.Encoding.PEM)


_INTERMEDIATE_KEY: dict[int, Key] = {}
_UNTRUSTED_ROOT_KEY: dict[int, Key] = {}


@functools.cache
def pki() -> Pki:
    root_key, mid_key, other_root_key = _ec(), _ec(), _ec()
    root = issue("Test Community Root CA", root_key, ca=True,
                 not_after=datetime.now(UTC) + timedelta(days=3650))
    mid = issue("Test Community Issuing CA", mid_key, issuer=(root, root_key), ca=True,
                not_after=datetime.now(UTC) + timedelta(days=1825))
    _INTERMEDIATE_KEY[id(mid)] = mid_key
    by_mid = (mid, mid_key)

    def holder(cn: str, san: str, key: Key | None = None, **kw: object) -> Holder:
        key = key or _rsa()
        return Holder(issue(cn, key, issuer=by_mid, san=san, **kw), key, (mid,))  # type: ignore[arg-type]

    client = holder("Scheduler App", CLIENT_URI)
    other = holder("Other App", OTHER_URI, _ec())
    b2b = holder("Payer Service", B2B_URI)
    revoked = holder("Revoked App", CLIENT_URI, _ec())
    past = datetime.now(UTC)
    expired = holder("Expired App", CLIENT_URI, _ec(), not_before=past - timedelta(days=30),
                     not_after=past - timedelta(days=1))
    no_signature = holder("Encipherment Only", CLIENT_URI, _ec(), digital_signature=False)
    other_root = issue("Untrusted Root CA", other_root_key, ca=True)
    _UNTRUSTED_ROOT_KEY[id(other_root)] = other_root_key
    untrusted_key = _rsa()
    untrusted = Holder(issue("Impostor App", untrusted_key, issuer=(other_root, other_root_key),
                             san=CLIENT_URI), untrusted_key, ())
    now = datetime.now(UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(mid.subject)
           .last_update(now - timedelta(hours=1)).next_update(now + timedelta(days=7))
           .add_revoked_certificate(x509.RevokedCertificateBuilder()
                                    .serial_number(revoked.cert.serial_number)
                                    .revocation_date(now - timedelta(hours=1)).build())
           .sign(mid_key, hashes.SHA256()))
    return Pki(root, mid, crl, client, other, b2b, revoked, expired, no_signature, untrusted,
               other_root)


@functools.cache
def _server(issuer: str) -> Holder:
    p, key = pki(), _ec()
    return Holder(issue("Authorization Server", key,
                        issuer=(p.intermediate, _INTERMEDIATE_KEY[id(p.intermediate)]),
                        san=issuer), key, (p.intermediate,))


@functools.cache
def _untrusted_server(issuer: str) -> Holder:
    p, key = pki(), _ec()
    return Holder(issue("Impostor Server", key, issuer=(
        p.untrusted_root, _UNTRUSTED_ROOT_KEY[id(p.untrusted_root)]), san=issuer), key, ())
