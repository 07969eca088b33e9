"""Service providers registered from their metadata: parsed (defused, bounded) into what an
administrator checks (ACS URLs, certificates, requested attributes), stored, listed, deleted.
A metadata URL is fetched through the one outbound client (idp.core.outbound: no SSRF)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from saml2.mdstore import InMemoryMetaData
from sqlalchemy import select

from idp import clock
from idp.audit import service as audit
from idp.context import policy
from idp.core import outbound
from idp.extensions import db
from idp.policy import NAMEID_FORMATS
from idp.saml import xmlguard
from idp.saml.models import SamlServiceProvider

POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
SOAP = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP"


class MetadataError(Exception):
    """The metadata cannot be used; the message is safe to show."""


@dataclass(frozen=True)
class Endpoint:
    binding: str
    location: str
    index: int | None = None
    is_default: bool = False
    response_location: str | None = None


@dataclass(frozen=True)
class SpMetadata:
    """What one SP's metadata says, parsed."""

    entity_id: str
    acs: list[Endpoint]
    slo: list[Endpoint]
    signing_certs: list[str]
    encryption_certs: list[str]
    authn_requests_signed: bool
    want_assertions_signed: bool
    requested_attributes: list[str] = field(default_factory=list)

    def default_acs(self) -> Endpoint | None:
        posts = [e for e in self.acs if e.binding == POST]
        for e in posts:
            if e.is_default:
                return e
        return min(posts, key=lambda e: e.index or 0) if posts else None

    def slo_for(self, binding: str) -> Endpoint | None:
        return next((e for e in self.slo if e.binding == binding), None)


def _true(value: object) -> bool:
    return str(value).lower() in ("true", "1")


def parse(xml: str | bytes) -> SpMetadata:
    """One SP's EntityDescriptor, checked with the inbound XML bounds."""
    data = xml.encode() if isinstance(xml, str) else xml
    try:
        xmlguard.check(data, policy().saml)
    except xmlguard.MessageRefused as exc:
        raise MetadataError(exc.reason) from None
    store = InMemoryMetaData(None, data.decode("utf-8", "replace"))
    try:
        store.load()
    except Exception:  # noqa: BLE001 - pysaml2 raises many kinds on malformed metadata
        raise MetadataError("not SAML 2.0 metadata") from None
    entities = [e for e in store.keys() if store[e].get("spsso_descriptor")]
    if len(entities) != 1:
        raise MetadataError("the metadata must describe exactly one service provider")
    entity_id = entities[0]
    spsso = store[entity_id]["spsso_descriptor"][0]
    acs = [Endpoint(a["binding"], a["location"], int(a["index"]) if a.get("index") else None,
                    _true(a.get("is_default")))
           for a in spsso.get("assertion_consumer_service", [])]
    slo = [Endpoint(s["binding"], s["location"], response_location=s.get("response_location"))
           for s in spsso.get("single_logout_service", [])]
    if not any(a.binding == POST for a in acs):
        raise MetadataError("the service provider has no HTTP-POST AssertionConsumerService")
    for endpoint in (*acs, *slo):
        if not endpoint.location.startswith(("https://", "http://")):
            raise MetadataError("endpoints must be http(s) URLs")
    requested = []
    for service in spsso.get("attribute_consuming_service", []):
        for attr in service.get("requested_attribute", []):
            requested.append(attr.get("friendly_name") or attr.get("name"))
    return SpMetadata(
        entity_id=entity_id, acs=acs, slo=slo,
        signing_certs=[c for _, c in store.certs(entity_id, "spsso", "signing")],
        encryption_certs=[c for _, c in store.certs(entity_id, "spsso", "encryption")],
        authn_requests_signed=_true(spsso.get("authn_requests_signed")),
        want_assertions_signed=_true(spsso.get("want_assertions_signed")),
        requested_attributes=requested)


@dataclass(frozen=True)
class CertInfo:
    """What an administrator checks of a certificate in SP metadata."""

    subject: str
    not_after: str
    sha256: str


def describe_cert(body: str) -> CertInfo:
    """A metadata X509Certificate (base64 DER) described; unreadable: said so."""
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode("".join(body.split())))
    except ValueError:
        return CertInfo("(unreadable certificate)", "", "")
    digest = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return CertInfo(cert.subject.rfc4514_string()[:200],
                    cert.not_valid_after_utc.strftime("%Y-%m-%d"), digest)


def fetch(url: str) -> bytes:
    """Metadata from a URL, through the outbound client (its SSRF rules and size cap)."""
    try:
        answer = outbound.client().get(url, max_bytes=policy().saml.max_inflated_bytes)
    except outbound.OutboundRefused as exc:
        raise MetadataError(f"metadata URL refused: {exc.reason}") from None
    except Exception as exc:  # noqa: BLE001 - any network failure
        raise MetadataError(f"metadata URL could not be fetched ({type(exc).__name__})") from None
    if answer.status_code != 200:
        raise MetadataError(f"metadata URL answered HTTP {answer.status_code}")
    return answer.content


def register(xml: bytes, *, name: str | None, nameid_format: str | None,
             metadata_url: str | None, actor: str) -> tuple[SamlServiceProvider, bool]:
    """Create the SP of this metadata, or update the one with its entityID; (row, created)."""
    try:
        text = xml.decode("utf-8")
    except UnicodeDecodeError:
        raise MetadataError("the metadata is not UTF-8 text") from None
    meta = parse(xml)
    fmt = nameid_format or policy().saml.default_nameid_format
    if fmt not in NAMEID_FORMATS:
        raise MetadataError(f"nameid format: one of {', '.join(NAMEID_FORMATS)}")
    now = clock.now()
    row = db.session.get(SamlServiceProvider, meta.entity_id)
    created = row is None
    if row is None:
        row = SamlServiceProvider(entity_id=meta.entity_id, created_at=now,
                                  name=name or meta.entity_id)
        db.session.add(row)
    if name:
        row.name = name
    if nameid_format or created:
        row.nameid_format = fmt
    row.metadata_xml = text
    row.metadata_url = metadata_url
    row.updated_at = now
    audit.record("saml.sp_registered" if created else "saml.sp_updated", actor=actor,
                 sp=meta.entity_id)
    return row, created


def get(entity_id: str) -> SamlServiceProvider | None:
    return db.session.get(SamlServiceProvider, entity_id) if entity_id else None


def all_sps() -> list[SamlServiceProvider]:
    return list(db.session.execute(
        select(SamlServiceProvider).order_by(SamlServiceProvider.name)).scalars())


def delete(entity_id: str, *, actor: str) -> bool:
    row = get(entity_id)
    if row is None:
        return False
    db.session.delete(row)
    audit.record("saml.sp_deleted", actor=actor, sp=entity_id)
    return True
