"""The SAML IdP over pysaml2: our configuration, AuthnRequests received and checked, the
signed assertions answered, and LogoutRequests in both directions.

pysaml2's `saml2.server.Server` does the protocol and xmlsec1 the XML signatures; what comes
in has passed idp.saml.xmlguard first. The HTTP-Redirect binding's signature covers the raw
query string as sent (SAML bindings §3.4.4.1), so it is verified over those very bytes with
the SP's metadata certificate (RSA/ECDSA from `cryptography`, not XML signature code)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus, urlencode

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from saml2 import (
    BINDING_HTTP_POST,
    BINDING_HTTP_REDIRECT,
    BINDING_SOAP,
    samlp,
    xmldsig,
)
from saml2.attribute_converter import AttributeConverter
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor, sign_entity_descriptor
from saml2.s_utils import do_ava
from saml2.saml import (
    NAME_FORMAT_BASIC,
    NAME_FORMAT_URI,
    NAMEID_FORMAT_EMAILADDRESS,
    NAMEID_FORMAT_PERSISTENT,
    NAMEID_FORMAT_TRANSIENT,
    Attribute,
    Issuer,
    NameID,
)
from saml2.server import Server
from saml2.sigver import (
    RSA_OAEP_MGF1P,
    get_pem_wrapped_unwrapped,
    make_temp,
    pre_encryption_part,
    security_context,
)
from saml2.time_util import in_a_while
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy
from idp.core import outbound
from idp.extensions import db
from idp.saml import entity, registry, xmlguard
from idp.saml.models import SamlParticipant, SamlRequest, SamlServiceProvider

NS_SAML = "{urn:oasis:names:tc:SAML:2.0:assertion}"
NS_SAMLP = "{urn:oasis:names:tc:SAML:2.0:protocol}"
FORMATS = {"persistent": NAMEID_FORMAT_PERSISTENT, "email": NAMEID_FORMAT_EMAILADDRESS,
           "transient": NAMEID_FORMAT_TRANSIENT}
SIGALGS: dict[str, Any] = {
    xmldsig.SIG_RSA_SHA256: hashes.SHA256(), xmldsig.SIG_RSA_SHA384: hashes.SHA384(),
    xmldsig.SIG_RSA_SHA512: hashes.SHA512(),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": hashes.SHA256()}


class Refused(Exception):
    """The message is refused before any SP endpoint is trusted: a 4xx page, nothing sent.
    `reason` is safe to show and record."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


issuer, entity_id, endpoint = entity.issuer, entity.entity_id, entity.endpoint
key_files, participants_of = entity.key_files, entity.participants_of


def name_format(name: str) -> str:
    """NameFormat uri for a URI Name (urn:oid:..., a claim URL), basic for any other."""
    return NAME_FORMAT_URI if name.startswith(("urn:", "http://", "https://")) \
        else NAME_FORMAT_BASIC


class _Names(AttributeConverter):
    """Our attributes under the Names one SP expects (saml.toml attribute_profile and
    attribute_names): pysaml2's converter gives one NameFormat to a whole statement, this
    gives each Attribute its own; FriendlyName is always our name."""

    def __init__(self, names: dict[str, str]) -> None:
        super().__init__(NAME_FORMAT_BASIC)
        self.names = names
        self._to = {ours.lower(): sent for ours, sent in names.items()}
        self._fro = {sent.lower(): ours for ours, sent in names.items()
                     if name_format(sent) == NAME_FORMAT_BASIC}

    def to_(self, attrvals: dict[str, Any]) -> list[Attribute]:
        attributes = []
        for ours, values in attrvals.items():
            sent = self.names.get(ours, ours)
            attributes.append(Attribute(name=sent, name_format=name_format(sent),
                                        friendly_name=ours,
                                        attribute_value=do_ava(values)))
        return attributes


def _converters(sp_entity_id: str | None) -> list[AttributeConverter]:
    """The converter that writes the attribute statement, and one that reads URI Names (an
    SP's RequestedAttribute of a URI Name is matched to our attribute through it)."""
    names = policy().saml.attribute_names(sp_entity_id or "")
    uris = AttributeConverter(NAME_FORMAT_URI)
    uris.from_dict({"identifier": NAME_FORMAT_URI,
                    "fro": {sent: ours for ours, sent in names.items()
                            if name_format(sent) == NAME_FORMAT_URI}})
    return [_Names(names), uris]


def config(sps: list[SamlServiceProvider]) -> IdPConfig:
    """pysaml2's IdP configuration: our endpoints and key, these SPs' metadata."""
    rules, files = policy().saml, key_files()
    conf = IdPConfig().load({
        "entityid": entity_id(),
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "key_file": str(files.key_file),
        "cert_file": str(files.cert_file),
        "signing_algorithm": xmldsig.SIG_RSA_SHA256,
        "digest_algorithm": xmldsig.DIGEST_SHA256,
        "accepted_time_diff": rules.clock_skew,
        "metadata": {"inline": [sp.metadata_xml for sp in sps]},
        "service": {"idp": {
            "name": "Provider Identity",
            "endpoints": {
                "single_sign_on_service": [(endpoint("sso"), BINDING_HTTP_REDIRECT),
                                           (endpoint("sso"), BINDING_HTTP_POST)],
                "single_logout_service": [(endpoint("slo"), BINDING_HTTP_REDIRECT),
                                          (endpoint("slo"), BINDING_HTTP_POST)],
            },
            "name_id_format": list(FORMATS.values()),
            "want_authn_requests_signed": False,  # per SP (its metadata), checked below
            "sign_assertion": True,
            "sign_response": rules.sign_response,
            "policy": {"default": {"lifetime": {"seconds": rules.assertion_lifetime},
                                   "attribute_restrictions": None,
                                   "name_form": NAME_FORMAT_BASIC}},
        }},
    })
    conf.attribute_converters = _converters(sps[0].entity_id if len(sps) == 1 else None)
    return conf


AES256_GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"


class _Server(Server):
    """pysaml2's Server reading messages this module has decoded and checked already (its
    own decoding would inflate without a bound), and encrypting assertions with AES-256-GCM
    (pysaml2's own choice is 3DES-CBC): xmlsec1 encrypts, a fresh AES key per assertion sent
    to the SP's certificate with RSA-OAEP."""

    @staticmethod
    def unravel(txt: Any, binding: Any, msgtype: str = "response") -> Any:
        return base64.b64decode(txt)

    def _encrypt_assertion(self, encrypt_cert: Any, sp_entity_id: Any, response: Any,
                           node_xpath: Any = None) -> Any:
        if not encrypt_cert:  # never pysaml2's fallback: the caller names the certificate
            raise Refused("no encryption certificate for this service provider", 403)
        wrapped, unwrapped = get_pem_wrapped_unwrapped(encrypt_cert)
        cert = make_temp(wrapped.encode("ascii"), decode=False,
                         delete_tmpfiles=self.config.delete_tmpfiles)
        template = pre_encryption_part(msg_enc=AES256_GCM, key_enc=RSA_OAEP_MGF1P,
                                       encrypt_cert=unwrapped)
        return self.sec.encrypt_assertion(response, cert.name, template, key_type="aes-256",
                                          node_xpath=node_xpath)


def server(sps: list[SamlServiceProvider] | None = None) -> _Server:
    return _Server(config=config(sps or []))


def metadata_xml() -> str:
    """Our signed IdP metadata, valid for `metadata_valid_hours` (validUntil)."""
    conf = config([])
    descriptor = entity_descriptor(conf)
    descriptor.valid_until = in_a_while(hours=policy().saml.metadata_valid_hours)
    _, signed = sign_entity_descriptor(descriptor, None, security_context(conf),
                                       xmldsig.SIG_RSA_SHA256, xmldsig.DIGEST_SHA256)
    return str(signed)


# -- inbound messages ------------------------------------------------------------------------
@dataclass(frozen=True)
class Inbound:
    """One SAMLRequest/SAMLResponse as it arrived: binding, the checked XML, its parts."""

    redirect: bool
    xml: bytes
    relay_state: str | None
    sigalg: str | None
    signature: str | None
    raw_query: str


def _query_part(raw_query: str, name: str) -> str | None:
    for part in raw_query.split("&"):
        if part.split("=", 1)[0] == name:
            return part
    return None


def verify_redirect(msg: Inbound, meta: registry.SpMetadata, kind: str) -> None:
    """The HTTP-Redirect signature over the raw query (SAMLRequest|SAMLResponse, RelayState,
    SigAlg in that order, as sent), with one of the SP's signing certificates."""
    if not msg.signature or not msg.sigalg:
        raise Refused("the message must be signed")
    algorithm = SIGALGS.get(msg.sigalg)
    if algorithm is None:
        raise Refused("unsupported signature algorithm")
    parts = [_query_part(msg.raw_query, n) for n in (kind, "RelayState", "SigAlg")]
    signed = "&".join(p for p in parts if p is not None).encode("ascii", "replace")
    try:
        signature = base64.b64decode(unquote_plus(_query_part(msg.raw_query, "Signature")
                                                  .split("=", 1)[1]))  # type: ignore[union-attr]
    except (ValueError, AttributeError, IndexError):
        raise Refused("malformed signature") from None
    for body in meta.signing_certs:
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode("".join(body.split())))
            key = cert.public_key()
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, signed, padding.PKCS1v15(), algorithm)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, signed, ec.ECDSA(algorithm))
            else:
                continue
            return
        except (InvalidSignature, ValueError):
            continue
    raise Refused("the message signature does not verify")


def _issuer_of(root: Any) -> str:
    found = root.find(f"{NS_SAML}Issuer")
    return (found.text or "").strip() if found is not None else ""


def read(value: str, *, redirect: bool) -> tuple[bytes, Any]:
    """The checked XML and root element of an encoded message (Refused otherwise). Comments
    are refused outright: a comment inside a signed NameID changes what naive readers see
    without breaking the signature."""
    try:
        xml = xmlguard.decode(value, redirect=redirect, rules=policy().saml)
    except xmlguard.MessageRefused as exc:
        raise Refused(exc.reason) from None
    if b"<!--" in xml:
        raise Refused("comments are not accepted in SAML messages")
    return xml, xmlguard.check(xml, policy().saml)


def _registered(root: Any) -> tuple[SamlServiceProvider, registry.SpMetadata]:
    sp = registry.get(_issuer_of(root))
    if sp is None:
        raise Refused("the service provider is not registered here", 403)
    return sp, registry.parse(sp.metadata_xml)


def _instant_ok(value: str | None) -> bool:
    rules = policy().saml
    try:
        when = datetime.fromisoformat((value or "").replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        return False
    now = clock.now()
    skew = timedelta(seconds=rules.clock_skew)
    return now - timedelta(seconds=rules.request_max_age) - skew <= when <= now + skew


# -- single sign-on ----------------------------------------------------------------------------
def receive_authn_request(msg_value: str, *, redirect: bool, relay_state: str | None,
                          sigalg: str | None, signature: str | None,
                          raw_query: str) -> SamlRequest:
    """Check an AuthnRequest and keep it until the sign-in it needs is done: the SP must be
    registered, the signature valid when its metadata says it signs, IssueInstant within the
    clock skew, the ACS one of its metadata's, the ID never seen before (Refused otherwise:
    a page, nothing posted to anyone)."""
    xml, root = read(msg_value, redirect=redirect)
    if root.tag != f"{NS_SAMLP}AuthnRequest":
        raise Refused("not an AuthnRequest")
    sp, meta = _registered(root)
    rules = policy().saml
    if relay_state is not None and len(relay_state) > rules.max_relay_state:
        raise Refused("RelayState is too long")
    msg = Inbound(redirect, xml, relay_state, sigalg, signature, raw_query)
    if redirect and (meta.authn_requests_signed or signature):
        verify_redirect(msg, meta, "SAMLRequest")
    srv = server([sp])
    srv.config.setattr("idp", "want_authn_requests_signed",
                       meta.authn_requests_signed and not redirect)
    try:
        parsed = srv.parse_authn_request(base64.b64encode(xml).decode(), BINDING_HTTP_POST)
    except Exception:  # noqa: BLE001 - pysaml2's refusals have many types
        raise Refused("the AuthnRequest is not valid (signature, destination or schema)") \
            from None
    request = parsed.message
    if not redirect and meta.authn_requests_signed and request.signature is None:
        raise Refused("the message must be signed")
    if not _instant_ok(request.issue_instant):
        raise Refused("IssueInstant is outside the accepted clock skew")
    acs = _acs(request, meta)
    fmt = None
    policy_el = request.name_id_policy
    if policy_el is not None and policy_el.format:
        fmt = next((k for k, v in FORMATS.items() if v == policy_el.format), None)
    requested_acr = _requested_acr(request)
    now = clock.now()
    row = SamlRequest(key=secrets.token_urlsafe(24), sp_entity_id=sp.entity_id,
                      request_id=str(request.id)[:256], acs_url=acs, relay_state=relay_state,
                      force_authn=str(request.force_authn).lower() == "true",
                      is_passive=str(request.is_passive).lower() == "true",
                      acr=requested_acr, nameid_format=fmt, unsolicited=False, created_at=now,
                      expires_at=now + timedelta(seconds=rules.request_lifetime))
    return _store(row)


def _store(row: SamlRequest) -> SamlRequest:
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError:
        raise Refused("this AuthnRequest was received before (replay)") from None
    return row


def _acs(request: Any, meta: registry.SpMetadata) -> str:
    posts = [e for e in meta.acs if e.binding == registry.POST]
    if request.assertion_consumer_service_url:
        url = request.assertion_consumer_service_url
        if url not in {e.location for e in posts}:
            raise Refused("the AssertionConsumerServiceURL is not in the SP's metadata")
        return str(url)
    if request.assertion_consumer_service_index is not None:
        for e in posts:
            if e.index == int(request.assertion_consumer_service_index):
                return e.location
        raise Refused("the AssertionConsumerServiceIndex is not in the SP's metadata")
    default = meta.default_acs()
    assert default is not None  # registry.parse requires one
    return default.location


def _requested_acr(request: Any) -> str | None:
    """RequestedAuthnContext's class refs as our acr (the weakest one we know); an unknown
    class alone is an acr no account reaches (refused as NoAuthnContext)."""
    rac = request.requested_authn_context
    if rac is None:
        return None
    mapping = policy().saml.authn_context
    reverse = {v: k for k, v in mapping.items()}
    rank = policy().assurance.rank
    known = []
    for ref in rac.authn_context_class_ref or []:
        text = (ref.text or "").strip()
        if text in mapping:
            known.append(text)
        elif text in reverse:
            known.append(reverse[text])
    if not known:
        return "unknown"
    return min(known, key=rank)


def launch_request(sp: SamlServiceProvider, relay_state: str | None) -> SamlRequest:
    """An IdP-initiated sign-in (no AuthnRequest): to the SP's default ACS."""
    meta = registry.parse(sp.metadata_xml)
    default = meta.default_acs()
    assert default is not None
    rules = policy().saml
    if relay_state is not None and len(relay_state) > rules.max_relay_state:
        raise Refused("RelayState is too long")
    now = clock.now()
    key = secrets.token_urlsafe(24)
    return _store(SamlRequest(key=key, sp_entity_id=sp.entity_id, request_id="launch-" + key,
                              acs_url=default.location, relay_state=relay_state,
                              force_authn=False, is_passive=False, acr=None,
                              nameid_format=None, unsolicited=True, created_at=now,
                              expires_at=now + timedelta(seconds=rules.request_lifetime)))


def pending(key: str) -> SamlRequest | None:
    """The waiting request of this key, unless answered or expired."""
    row = db.session.get(SamlRequest, key) if key and len(key) <= 64 else None
    if row is None or row.answered_at is not None or row.expires_at <= clock.now():
        return None
    return row


def allowed(user: User, sp_entity_id: str) -> bool:
    """The per-SP role restriction of saml.toml."""
    roles = policy().saml.sp(sp_entity_id).roles
    return roles is None or user.role in roles


@dataclass(frozen=True)
class App:
    """One SP a user may open: the portal's tile (name, and the IdP-initiated link)."""

    entity_id: str
    name: str
    launch_url: str


def apps_for(user: User) -> list[App]:
    """The registered SPs this account may sign in to (saml.toml role restrictions), by name,
    each with its IdP-initiated link `<issuer>/saml/launch?sp=<entityID>`."""
    return [App(sp.entity_id, sp.name, endpoint("launch") + "?" + urlencode({"sp": sp.entity_id}))
            for sp in registry.all_sps() if allowed(user, sp.entity_id)]


def name_id_for(user: User, sp: SamlServiceProvider, fmt: str) -> NameID:
    if fmt == "email":
        return NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=user.email)
    if fmt == "transient":
        return NameID(format=NAMEID_FORMAT_TRANSIENT, text=secrets.token_urlsafe(24))
    mac = hmac.new(key_files().pairwise_secret,
                   f"{sp.entity_id}\n{user.subject}".encode(), hashlib.sha256).digest()
    return NameID(format=NAMEID_FORMAT_PERSISTENT, name_qualifier=entity_id(),
                  sp_name_qualifier=sp.entity_id,
                  text=base64.urlsafe_b64encode(mac).decode().rstrip("="))


def identity(user: User, sp_entity_id: str) -> dict[str, list[str]]:
    """The attributes released to this SP (saml.toml: all, or its own list)."""
    rules = policy().saml
    values = {"email": [user.email], "given_name": [user.given_name],
              "family_name": [user.family_name], "preferred_username": [user.username],
              "npi": [user.npi] if user.npi else [], "roles": [user.role],
              "facility": [user.facility] if user.facility else []}
    wanted = rules.sp(sp_entity_id).attributes or rules.attributes
    return {k: v for k, v in values.items() if k in wanted and v and all(v)}


def encryption_mode(sp_entity_id: str) -> str:
    """saml.toml encrypt_assertions for this SP: never | if_key | required."""
    rules = policy().saml
    return rules.sp(sp_entity_id).encrypt_assertions or rules.encrypt_assertions


def encryption_cert(sp: SamlServiceProvider) -> str | None:
    """The certificate assertions to this SP are encrypted to, if policy and its metadata
    (a KeyDescriptor use="encryption", or one without `use`) say so."""
    if encryption_mode(sp.entity_id) == "never":
        return None
    certs = registry.parse(sp.metadata_xml).encryption_certs
    return certs[0] if certs else None


def answer(row: SamlRequest, user: User, *, sid: str, acr: str | None,
           auth_time: datetime) -> tuple[str, list[tuple[str, str]]]:
    """The signed Response for this request: (ACS URL, form fields). The request is
    answered once; the SP becomes a participant of session `sid` (logout)."""
    sp = db.session.get(SamlServiceProvider, row.sp_entity_id)
    if sp is None:
        raise Refused("the service provider is no longer registered", 403)
    rules = policy().saml
    fmt = row.nameid_format or rules.sp(sp.entity_id).nameid_format or sp.nameid_format
    name_id = name_id_for(user, sp, fmt)
    encrypt_to = encryption_cert(sp)
    if encrypt_to is None and encryption_mode(sp.entity_id) == "required":
        audit.record("saml.sso_denied", user_id=user.id, sp=sp.entity_id,
                     reason="no_encryption_key")
        raise Refused("this application must receive encrypted assertions, and its metadata "
                      "has no encryption key", 403)
    srv = server([sp])
    ident = identity(user, sp.entity_id)
    authn = {"class_ref": rules.authn_context.get(acr or "", rules.authn_context[
        policy().assurance.password_acr]), "authn_instant": int(auth_time.timestamp()),
        "authn_auth": entity_id()}
    response = srv.create_authn_response(
        ident, None if row.unsolicited else row.request_id, row.acs_url, sp.entity_id,
        name_id=name_id, authn=authn, sign_assertion=True, sign_response=rules.sign_response,
        sign_alg=xmldsig.SIG_RSA_SHA256, digest_alg=xmldsig.DIGEST_SHA256,
        encrypt_assertion=encrypt_to is not None, encrypt_cert_assertion=encrypt_to,
        encrypt_assertion_self_contained=True)
    xml = str(response)
    row.answered_at = clock.now()
    db.session.add(SamlParticipant(id=secrets.token_urlsafe(24), sid=sid, user_id=user.id,
                                   sp_entity_id=sp.entity_id, name_id=name_id.text,
                                   name_id_format=name_id.format, created_at=clock.now()))
    audit.record("saml.sso", user_id=user.id, sp=sp.entity_id, acr=acr,
                 unsolicited=row.unsolicited, nameid_format=fmt,
                 encrypted=encrypt_to is not None)
    fields = [("SAMLResponse", base64.b64encode(xml.encode()).decode())]
    if row.relay_state is not None:
        fields.append(("RelayState", row.relay_state))
    return row.acs_url, fields


def error_response(row: SamlRequest, status: str, message: str
                   ) -> tuple[str, list[tuple[str, str]]]:
    """A Response with a non-success status (NoPassive, NoAuthnContext, RequestDenied) to
    the request's ACS; the request is answered."""
    sp = db.session.get(SamlServiceProvider, row.sp_entity_id)
    srv = server([sp] if sp else [])
    response = srv.create_error_response(None if row.unsolicited else row.request_id,
                                         row.acs_url, (status, message))
    row.answered_at = clock.now()
    audit.record("saml.sso_refused", sp=row.sp_entity_id, status=status.rsplit(":", 1)[-1])
    fields = [("SAMLResponse", base64.b64encode(str(response).encode()).decode())]
    if row.relay_state is not None:
        fields.append(("RelayState", row.relay_state))
    return row.acs_url, fields


STATUS_NO_PASSIVE = samlp.STATUS_NO_PASSIVE
STATUS_NO_AUTHN_CONTEXT = samlp.STATUS_NO_AUTHN_CONTEXT
STATUS_REQUEST_DENIED = samlp.STATUS_REQUEST_DENIED


# -- single logout -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LogoutAnswer:
    """Where the browser goes after an SP-initiated logout: a redirect `location`, or a form
    POST of `fields` to `action`."""

    sids: list[str]
    location: str | None = None
    action: str | None = None
    fields: list[tuple[str, str]] | None = None


def receive_logout_request(msg_value: str, *, redirect: bool, relay_state: str | None,
                           sigalg: str | None, signature: str | None, raw_query: str,
                           browser_sid: str | None, browser_user: int | None
                           ) -> tuple[SamlServiceProvider, Any, list[str]]:
    """Check an SP's LogoutRequest (signature required: a logout ends sessions); the live
    sessions it names: those in which this SP received this NameID, and the browser's own
    when it is the same account's."""
    xml, root = read(msg_value, redirect=redirect)
    if root.tag != f"{NS_SAMLP}LogoutRequest":
        raise Refused("not a LogoutRequest")
    sp, meta = _registered(root)
    msg = Inbound(redirect, xml, relay_state, sigalg, signature, raw_query)
    if redirect:
        verify_redirect(msg, meta, "SAMLRequest")
    srv = server([sp])
    try:
        parsed = srv.parse_logout_request(base64.b64encode(xml).decode(), BINDING_HTTP_POST)
    except Exception:  # noqa: BLE001 - pysaml2's refusals have many types
        raise Refused("the LogoutRequest is not valid (signature, destination or schema)") \
            from None
    request = parsed.message
    if not redirect and request.signature is None:
        raise Refused("the message must be signed")
    if not _instant_ok(request.issue_instant):
        raise Refused("IssueInstant is outside the accepted clock skew")
    name_id = request.name_id
    if name_id is None or not name_id.text:
        raise Refused("the LogoutRequest names no NameID")
    rows = list(db.session.execute(select(SamlParticipant).where(
        SamlParticipant.sp_entity_id == sp.entity_id, SamlParticipant.name_id == name_id.text,
        SamlParticipant.ended_at.is_(None))).scalars())
    sids = sorted({r.sid for r in rows})
    users = {r.user_id for r in rows}
    if browser_sid and browser_user in users and browser_sid not in sids:
        sids.append(browser_sid)
    # This SP is told nothing more: it asked.
    db.session.execute(update(SamlParticipant).where(
        SamlParticipant.sp_entity_id == sp.entity_id, SamlParticipant.sid.in_(sids),
        SamlParticipant.ended_at.is_(None)).values(ended_at=clock.now())
        .execution_options(synchronize_session=False))
    audit.record("saml.slo", sp=sp.entity_id, sessions=len(sids),
                 user_id=next(iter(users)) if len(users) == 1 else None)
    return sp, request, sids


def logout_response(sp: SamlServiceProvider, request: Any, relay_state: str | None
                    ) -> LogoutAnswer:
    """The signed LogoutResponse to the SP's SingleLogoutService (Redirect, else POST)."""
    meta = registry.parse(sp.metadata_xml)
    srv = server([sp])
    for binding in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST):
        slo = meta.slo_for(binding)
        if slo is None:
            continue
        destination = slo.response_location or slo.location
        response = srv.create_logout_response(request, [binding],
                                              sign=binding != BINDING_HTTP_REDIRECT,
                                              sign_alg=xmldsig.SIG_RSA_SHA256,
                                              digest_alg=xmldsig.DIGEST_SHA256)
        if binding == BINDING_HTTP_REDIRECT:
            info = srv.apply_binding(binding, str(response), destination, relay_state or "",
                                     response=True, sign=True, sigalg=xmldsig.SIG_RSA_SHA256)
            location = dict(info["headers"])["Location"]
            return LogoutAnswer([], location=location)
        fields = [("SAMLResponse", base64.b64encode(str(response).encode()).decode())]
        if relay_state:
            fields.append(("RelayState", relay_state))
        return LogoutAnswer([], action=destination, fields=fields)
    return LogoutAnswer([])


def answered_later(sp: SamlServiceProvider, request_id: str) -> Any:
    """What logout_response needs of a LogoutRequest answered after the browser went through
    the other SPs' front-channel logouts: its ID and issuer."""
    return samlp.LogoutRequest(id=request_id, issuer=Issuer(text=sp.entity_id))


def _logout_request(srv: _Server, sp: SamlServiceProvider, row: SamlParticipant,
                    destination: str, *, sign: bool) -> Any:
    """Our LogoutRequest to this SP for this participant's NameID and SessionIndex."""
    persistent = row.name_id_format == NAMEID_FORMAT_PERSISTENT
    name_id = NameID(format=row.name_id_format, text=row.name_id,
                     name_qualifier=entity_id() if persistent else None,
                     sp_name_qualifier=sp.entity_id if persistent else None)
    _, request = srv.create_logout_request(
        destination, sp.entity_id, name_id=name_id, sign=sign,
        sign_alg=xmldsig.SIG_RSA_SHA256, digest_alg=xmldsig.DIGEST_SHA256,
        expire=None, reason="urn:oasis:names:tc:SAML:2.0:logout:user")
    return request


def front_channel_endpoint(sp: SamlServiceProvider) -> registry.Endpoint | None:
    """The SP's HTTP-Redirect (else HTTP-POST) SingleLogoutService when it has no SOAP one:
    such an SP hears of a logout only through the browser."""
    meta = registry.parse(sp.metadata_xml)
    if meta.slo_for(registry.SOAP) is not None:
        return None
    return meta.slo_for(registry.REDIRECT) or meta.slo_for(registry.POST)


def front_channel_only(sp_entity_id: str) -> bool:
    sp = db.session.get(SamlServiceProvider, sp_entity_id)
    return sp is not None and front_channel_endpoint(sp) is not None


def front_channel_logout(participant_id: str, relay_state: str) -> LogoutAnswer | None:
    """A signed LogoutRequest for one participant, through the browser: a redirect (HTTP-
    Redirect, the query signed) or a form POST (the XML signed) to the SP's logout endpoint;
    None when the SP is gone or lists none any more."""
    row = db.session.get(SamlParticipant, participant_id)
    sp = db.session.get(SamlServiceProvider, row.sp_entity_id) if row else None
    slo = front_channel_endpoint(sp) if row is not None and sp is not None else None
    if row is None or sp is None or slo is None:
        return None
    srv = server([sp])
    redirect = slo.binding == registry.REDIRECT
    request = _logout_request(srv, sp, row, slo.location, sign=not redirect)
    if redirect:
        info = srv.apply_binding(BINDING_HTTP_REDIRECT, str(request), slo.location,
                                 relay_state, sign=True, sigalg=xmldsig.SIG_RSA_SHA256)
        return LogoutAnswer([], location=dict(info["headers"])["Location"])
    return LogoutAnswer([], action=slo.location, fields=[
        ("SAMLRequest", base64.b64encode(str(request).encode()).decode()),
        ("RelayState", relay_state)])


def soap_logout(participant_id: str) -> str:
    """Send one participant's SP a signed LogoutRequest over SOAP (through the outbound
    client); the outcome, for the audit trail."""
    row = db.session.get(SamlParticipant, participant_id)
    sp = db.session.get(SamlServiceProvider, row.sp_entity_id) if row else None
    if row is None or sp is None:
        return "gone"
    meta = registry.parse(sp.metadata_xml)
    slo = meta.slo_for(registry.SOAP)
    if slo is None:
        return "no_soap_endpoint"
    srv = server([sp])
    request = _logout_request(srv, sp, row, slo.location, sign=True)
    info = srv.apply_binding(BINDING_SOAP, str(request), slo.location)
    try:
        answer = outbound.client().post(slo.location, data=info["data"],
                                        headers={"Content-Type": "text/xml",
                                                 "SOAPAction": "http://www.oasis-open.org/"
                                                 "committees/security"})
    except outbound.OutboundRefused as exc:
        return f"refused: {exc.reason}"
    except Exception as exc:  # noqa: BLE001 - network failure: recorded
        return f"failed: {type(exc).__name__}"
    return "delivered" if answer.status_code == 200 else f"http_{answer.status_code}"
