"""Trust communities and certificate path validation (FAST Security IG §1.2, RFC 5280).

A community is a set of anchors (root CA certificates), optional intermediates and CRLs, from
policies/udap.toml (files) or the database (`idp udap communities add`). A certificate chain
sent in a JWT's `x5c` header is validated with cryptography's X.509 verification API
(PolicyBuilder/Store: path building to an anchor, validity at now(), basic constraints, key
usage, name constraints), never by hand; this module adds what that API leaves to its caller:
the leaf must allow digitalSignature, its SAN URI must be the expected `iss`, and no
certificate of the path may be on its issuer's CRL (a CRL whose signature does not verify, or
whose next_update has passed, refuses the chain: fail closed).

Every refusal is one exception, Untrusted, whose message is safe to return.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import select

from idp import clock
from idp.context import policy
from idp.extensions import db
from idp.udap.models import UdapCommunity

MAX_CERTIFICATE_BYTES = 8192  # one DER certificate of an x5c chain


class Untrusted(ValueError):
    """The chain does not validate against any community; str() says why, safely."""


@dataclass(frozen=True)
class Community:
    name: str
    source: str  # "policy" | "database"
    anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]


@dataclass(frozen=True)
class Trusted:
    """A validated chain: the community, the leaf, its SAN URIs and the signer's key."""

    community: str
    leaf: x509.Certificate
    uris: tuple[str, ...]
    keys: KeySet

    @property
    def subject(self) -> str:
        return self.leaf.subject.rfc4514_string()[:512]

    @property
    def serial(self) -> str:
        return format(self.leaf.serial_number, "x")[:64]


# -- reading certificates and CRLs ---------------------------------------------------------
def load_certificates(data: bytes) -> list[x509.Certificate]:
    """PEM (one or more) or DER certificates; ValueError if none."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    if b"-----BEGIN" in data:
        blocks = data.split(b"-----END X509 CRL-----")
        return [x509.load_pem_x509_crl(b + b"-----END X509 CRL-----\n")
                for b in blocks if b"-----BEGIN X509 CRL-----" in b]
    return [x509.load_der_x509_crl(data)]


def _files(paths: Iterable[str], loader: type | object) -> list:
    found: list = []
    for path in paths:
        found.extend(loader(Path(path).read_bytes()))  # type: ignore[operator]
    return found


def communities() -> list[Community]:
    """The communities of policies/udap.toml and of the database, policy first."""
    found = []
    for spec in policy().udap.communities.values():
        try:
            found.append(Community(spec.name, "policy",
                                   tuple(_files(spec.anchors, load_certificates)),
                                   tuple(_files(spec.intermediates, load_certificates)),
                                   tuple(_files(spec.crls, load_crls))))
        except (OSError, ValueError):
            continue  # an unreadable file trusts nothing (idp udap communities list shows it)
    for row in db.session.execute(select(UdapCommunity).order_by(UdapCommunity.name)).scalars():
        try:
            found.append(_from_row(row))
        except ValueError:
            continue
    return found


def _from_row(row: UdapCommunity) -> Community:
    return Community(row.name, "database",
                     tuple(load_certificates(row.anchors_pem.encode())),
                     tuple(load_certificates(row.intermediates_pem.encode())
                           if row.intermediates_pem.strip() else ()),
                     tuple(load_crls(row.crls_pem.encode()) if row.crls_pem.strip() else ()))


# -- validating a chain ----------------------------------------------------------------------
def b64der(cert: x509.Certificate) -> str:
    """A certificate as an x5c member (base64 DER)."""
    from_der = cert.public_bytes(serialization.Encoding.DER)
    return base64.b64encode(from_der).decode()


def parse_x5c(x5c: object) -> list[x509.Certificate]:
    """The certificates of a JWS x5c header (RFC 7515 §4.1.6: base64 DER, leaf first)."""
    limit = policy().udap.max_chain_length
    if not isinstance(x5c, list) or not x5c:
        raise Untrusted("the x5c header must be a non-empty list of certificates")
    if len(x5c) > limit:
        raise Untrusted(f"the x5c chain is longer than {limit} certificates")
    chain = []
    for item in x5c:
        if not isinstance(item, str) or len(item) > MAX_CERTIFICATE_BYTES * 4 // 3 + 4:
            raise Untrusted("an x5c certificate is malformed or too large")
        try:
            chain.append(x509.load_der_x509_certificate(base64.b64decode(item, validate=True)))
        except (ValueError, binascii.Error):
            raise Untrusted("an x5c certificate is malformed") from None
    return chain


def _digital_signature(_policy: object, _cert: x509.Certificate,
                       usage: x509.KeyUsage | None) -> None:
    """The leaf signs JWTs: its key usage must allow digitalSignature (IG §1.2.3)."""
    if usage is None or not usage.digital_signature:
        raise ValueError("the certificate's key usage does not allow digitalSignature")


def validate(x5c: object, expected_uri: str | None, community_name: str | None = None
             ) -> Trusted:
    """The chain of `x5c` validated against the first community that anchors it (only
    `community_name` when given: a registered client stays in its community), its leaf's
    SAN URI equal to `expected_uri` (None: any URI, returned in Trusted.uris), not revoked."""
    chain = parse_x5c(x5c)
    leaf, intermediates = chain[0], chain[1:]
    reasons = []
    for community in communities():
        if not community.anchors or community_name not in (None, community.name):
            continue
        try:
            path = _verify(community, leaf, intermediates)
        except (verification.VerificationError, ValueError, TypeError) as exc:
            reasons.append(_reason(str(exc)))
            continue
        _check_revocation(community, path)
        uris = tuple(n.value for n in _san(leaf))
        if expected_uri is not None and expected_uri not in uris:
            raise Untrusted("the certificate's subjectAltName URI is not the token's iss")
        return Trusted(community.name, leaf, uris, KeySet([_jwk(leaf)]))
    if "key usage" in reasons:
        raise Untrusted("the certificate's key usage does not allow digitalSignature")
    if reasons and all(r == "expired" for r in reasons):
        raise Untrusted("the certificate is expired or not yet valid")
    raise Untrusted("the certificate does not chain to a trusted community anchor")


def _verify(community: Community, leaf: x509.Certificate,
            intermediates: list[x509.Certificate]) -> list[x509.Certificate]:
    ee_policy = verification.ExtensionPolicy.webpki_defaults_ee().require_present(
        x509.KeyUsage, verification.Criticality.AGNOSTIC, _digital_signature)
    verifier = (verification.PolicyBuilder()
                .store(verification.Store(list(community.anchors)))
                .time(clock.now())
                .max_chain_depth(policy().udap.max_chain_depth)
                .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                    ee_policy=ee_policy)
                .build_client_verifier())
    verified = verifier.verify(leaf, [*intermediates, *community.intermediates])
    return list(verified.chain)


def _reason(message: str) -> str:
    if "digitalSignature" in message:
        return "key usage"
    return "expired" if "not valid at validation time" in message else "untrusted"


def _san(cert: x509.Certificate) -> list[x509.UniformResourceIdentifier]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [n for n in ext.value if isinstance(n, x509.UniformResourceIdentifier)]


def _check_revocation(community: Community, path: list[x509.Certificate]) -> None:
    """Each certificate below the anchor against its issuer's CRL of the community."""
    now = clock.now()
    for cert, issuer in zip(path, path[1:], strict=False):
        crls = [c for c in community.crls if c.issuer == issuer.subject]
        if not crls:
            if policy().udap.require_crl:
                raise Untrusted("no revocation list is configured for the certificate's issuer")
            continue
        for crl in crls:
            try:
                good = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            except (TypeError, ValueError, InvalidSignature):
                good = False
            if not good:
                raise Untrusted("the revocation list's signature does not verify")
            if crl.next_update_utc is not None and crl.next_update_utc < now:
                raise Untrusted("the revocation list is out of date")
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise Untrusted("the certificate is revoked")


def _jwk(cert: x509.Certificate) -> RSAKey | ECKey:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return RSAKey.import_key(key)  # type: ignore[arg-type]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ECKey.import_key(key)  # type: ignore[arg-type]
    raise Untrusted("the certificate's key is neither RSA nor EC")


def public_jwks(trusted: Trusted) -> dict:
    """The leaf's public key as a JWK set (the registered `jwks` of a UDAP client)."""
    return dict(trusted.keys.as_dict(private=False))
