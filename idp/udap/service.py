"""UDAP logic (HL7 FAST Security IG STU2), no Flask request objects: signed metadata, the
verification of a UDAP registration request, of a UDAP client assertion and of its hl7-b2b
extension, the single use of a statement's jti, and the communities operators add."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.context import policy, settings
from idp.core.crypto import digest
from idp.extensions import db
from idp.keys import jwt
from idp.oidc.models import Client
from idp.oidc.registry import AssertionCheck, Refused, TrustedRegistration, registry
from idp.udap import trust
from idp.udap.models import UdapClient, UdapCommunity, UdapUsedJti

VERSION = "1"
B2B = "hl7-b2b"
# Metadata a software statement may assert (IG §3.1; everything else is ignored).
FIELDS = ("client_name", "redirect_uris", "grant_types", "response_types", "scope",
          "token_endpoint_auth_method", "logo_uri", "contacts")
GRANTS = ("authorization_code", "refresh_token", "client_credentials")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def issuer() -> str:
    return settings().issuer


def registration_endpoint() -> str:
    return f"{issuer()}/register"


def token_endpoint() -> str:
    return f"{issuer()}/token"


# -- discovery -----------------------------------------------------------------------------
def metadata() -> dict[str, Any]:
    """/.well-known/udap (IG §2.2): what this server does, and signed_metadata when the
    server's certificate is configured."""
    rules = policy().udap
    base = issuer()
    doc: dict[str, Any] = {
        "udap_versions_supported": [VERSION],
        "udap_profiles_supported": list(rules.profiles),
        "udap_authorization_extensions_supported": list(rules.authorization_extensions),
        "udap_authorization_extensions_required": list(rules.authorization_extensions_required),
        "udap_certifications_supported": list(rules.certifications),
        "udap_certifications_required": [],
        "grant_types_supported": list(GRANTS),
        "scopes_supported": sorted(registry().supported_scopes(policy())),
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": token_endpoint(),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(jwt.ALGORITHMS),
        "registration_endpoint": registration_endpoint(),
        "registration_endpoint_jwt_signing_alg_values_supported": list(jwt.ALGORITHMS),
    }
    signed = signed_metadata()
    if signed is not None:
        doc["signed_metadata"] = signed
    return doc


def server_credentials() -> tuple[list[x509.Certificate], Any] | None:
    """The server's certificate chain and private key (IDP_UDAP_CERTIFICATE, IDP_UDAP_KEY),
    or None when not configured or unreadable."""
    cert_path, key_path = settings().udap_certificate, settings().udap_key
    if cert_path is None or key_path is None:
        return None
    try:
        chain = trust.load_certificates(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return chain, key


def signed_metadata() -> str | None:
    """IG §2.3: a JWT signed with the server's certificate key (x5c: its chain), iss = sub =
    the base URL (udap.toml metadata_base, else the issuer; the certificate's SAN URI), the
    endpoints, exp within a year."""
    if server_credentials() is None:
        return None
    now = clock.timestamp()
    base = server_uri()
    claims = {"iss": base, "sub": base, "iat": now,
              "exp": now + policy().udap.metadata_lifetime, "jti": secrets.token_urlsafe(16),
              "authorization_endpoint": f"{issuer()}/authorize",
              "token_endpoint": token_endpoint(),
              "registration_endpoint": registration_endpoint()}
    return sign_as_server(claims)


def sign_as_server(claims: dict[str, Any]) -> str | None:
    """`claims` signed with the server certificate's key, its chain in x5c (signed metadata;
    as a client of another server, Tiered OAuth: software statements and client
    assertions), or None when the certificate is not configured."""
    found = server_credentials()
    if found is None:
        return None
    chain, key = found
    if isinstance(key, rsa.RSAPrivateKey):
        jwk: RSAKey | ECKey = RSAKey.import_key(key)  # type: ignore[arg-type]
        alg = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        jwk, alg = ECKey.import_key(key), "ES256"  # type: ignore[arg-type]
    else:
        return None
    return jwt.sign_with_certificate(claims, jwk, alg, [trust.b64der(c) for c in chain])


def server_uri() -> str:
    """The URI this server's certificate names (its SAN URI): metadata_base or the issuer."""
    return policy().udap.metadata_base or issuer()


# -- registration (IG §3) --------------------------------------------------------------------
def recognizes(body: Any) -> bool:
    """A UDAP registration request: `udap` and a software_statement (IG §3.1)."""
    return isinstance(body, dict) and "udap" in body and "software_statement" in body


def verify_registration(body: dict[str, Any]) -> TrustedRegistration:
    """IG §3.1-3.2: the statement's certificate chains to a community, is valid and not
    revoked, its SAN URI is iss = sub; aud is our registration endpoint; exp short; jti
    unused; signed with the leaf's key. Refused with the IG's error codes."""
    if body.get("udap") != VERSION:
        raise Refused("invalid_client_metadata", "udap must be 1")
    statement = body.get("software_statement")
    kind = jwt.Kind.UDAP_SOFTWARE_STATEMENT
    if not isinstance(statement, str):
        raise Refused("invalid_software_statement", "software_statement must be a signed JWT")
    try:
        head = jwt.unverified_header(statement, kind)
        iss = jwt.unverified_claims(statement, kind).get("iss")
    except jwt.InvalidJWT as exc:
        raise Refused("invalid_software_statement", str(exc)) from None
    if head.get("alg") not in jwt.ALGORITHMS:
        raise Refused("invalid_software_statement", "alg must be one of "
                      + ", ".join(jwt.ALGORITHMS))
    if not isinstance(iss, str) or not iss:
        raise Refused("invalid_software_statement", "iss is required")
    try:
        trusted = trust.validate(head.get("x5c"), iss)
    except trust.Untrusted as exc:
        code = "unapproved_software_statement" if "community anchor" in str(exc) \
            else "invalid_software_statement"
        raise Refused(code, str(exc)) from None
    try:
        claims = jwt.verify(statement, kind, keys=trusted.keys, issuer=iss,
                            audiences=[registration_endpoint()],
                            max_lifetime=policy().udap.statement_max_lifetime).claims
    except jwt.InvalidJWT as exc:
        raise Refused("invalid_software_statement", str(exc)) from None
    meta = _statement_metadata(claims)
    if not use_jti(iss, claims["jti"], claims["exp"]):
        raise Refused("invalid_software_statement", "the statement's jti was used before")
    row = db.session.execute(select(UdapClient).where(UdapClient.iss == iss)
                             ).scalar_one_or_none()
    if row is not None and row.community != trusted.community:
        # the same URI vouched for by another community does not take the registration over
        raise Refused("unapproved_software_statement", "this iss is registered through "
                      "another trust community")
    cancel = meta["grant_types"] == []

    def bind(client: Client) -> None:
        now = clock.now()
        if cancel:
            db.session.execute(delete(UdapClient).where(UdapClient.client_id == client.client_id))
            audit.record("udap.registration_cancelled", client_id=client.client_id,
                         actor="registration:udap", iss=iss[:200])
            return
        link = row or UdapClient(iss=iss, registered_at=now)
        link.client_id = client.client_id  # a client deleted meanwhile was registered anew
        link.community, link.subject, link.serial = (trusted.community, trusted.subject,
                                                     trusted.serial)
        link.updated_at = now
        db.session.add(link)
        audit.record("udap.registered" if row is None else "udap.modified",
                     client_id=client.client_id, actor="registration:udap", iss=iss[:200],
                     community=trusted.community, subject=trusted.subject)

    meta["jwks"] = trust.public_jwks(trusted)
    return TrustedRegistration(meta, row.client_id if row else None, cancel, statement, bind)


def _statement_metadata(claims: dict[str, Any]) -> dict[str, Any]:
    """The RFC 7591 metadata the statement asserts, with the IG's rules (§3.1)."""
    meta = {k: claims[k] for k in FIELDS if k in claims}
    grants = meta.get("grant_types")
    if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
        raise Refused("invalid_client_metadata", "grant_types must be a list (empty: cancel)")
    if not grants:
        return {"grant_types": []}
    unknown = [g for g in grants if g not in GRANTS]
    if unknown:
        raise Refused("invalid_client_metadata", f"grant type {unknown[0]!r} is not supported")
    if "authorization_code" in grants and "client_credentials" in grants:
        raise Refused("invalid_client_metadata",
                      "authorization_code and client_credentials cannot be combined")
    if meta.get("token_endpoint_auth_method") != "private_key_jwt":
        raise Refused("invalid_client_metadata", "token_endpoint_auth_method must be "
                      "private_key_jwt")
    if not isinstance(meta.get("client_name"), str) or not meta["client_name"]:
        raise Refused("invalid_client_metadata", "client_name is required")
    if "authorization_code" in grants:
        if not meta.get("redirect_uris"):
            raise Refused("invalid_redirect_uri", "redirect_uris are required for "
                          "authorization_code")
        if not isinstance(meta.get("logo_uri"), str) or \
                not meta["logo_uri"].startswith("https://"):
            raise Refused("invalid_client_metadata", "logo_uri (https) is required for "
                          "authorization_code")
        if meta.get("response_types") not in (None, ["code"]):
            raise Refused("invalid_client_metadata", "response_types must be [code]")
    elif meta.get("redirect_uris"):
        raise Refused("invalid_redirect_uri", "redirect_uris only with authorization_code")
    if not isinstance(meta.get("scope"), str):
        raise Refused("invalid_client_metadata", "scope is required")
    meta.pop("logo_uri", None)
    meta.pop("contacts", None)
    return meta


def use_jti(iss: str, jti: Any, exp: Any) -> bool:
    """Record a statement's jti (single use per issuer); False if seen before."""
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        return False
    expires = clock.now() + timedelta(seconds=policy().udap.jti_retention)
    if isinstance(exp, int):
        try:
            expires = max(expires, clock.from_timestamp(exp))
        except (OverflowError, ValueError, OSError):
            return False
    db.session.execute(delete(UdapUsedJti).where(UdapUsedJti.expires_at < clock.now()))
    try:
        with db.session.begin_nested():
            db.session.add(UdapUsedJti(jti_hash=digest(f"udap:{iss}:{jti}"), expires_at=expires))
    except IntegrityError:
        return False
    return True


# -- client authentication (IG §4.2.1, §5.2.1) -----------------------------------------------
def assertion_check(client: Client, assertion: str) -> AssertionCheck | None:
    """For a UDAP-registered client: the x5c chain of its assertion validated against the
    communities, the leaf's SAN URI the client's registered iss; the leaf's key verifies the
    assertion (idp.oidc.server) as a UDAP client assertion."""
    row = db.session.execute(select(UdapClient).where(UdapClient.client_id == client.client_id)
                             ).scalar_one_or_none()
    if row is None:
        return None
    try:
        head = jwt.unverified_header(assertion, jwt.Kind.UDAP_CLIENT_ASSERTION)
        trusted = trust.validate(head.get("x5c"), row.iss, row.community)
    except (jwt.InvalidJWT, trust.Untrusted) as exc:
        raise Refused("invalid_client", str(exc)) from None

    def accept(claims: dict[str, Any], grant_type: str | None) -> dict[str, Any]:
        return accept_extensions(client, claims, grant_type)

    return AssertionCheck(trusted.keys, jwt.Kind.UDAP_CLIENT_ASSERTION, accept)


def accept_extensions(client: Client, claims: dict[str, Any], grant_type: str | None
                      ) -> dict[str, Any]:
    """IG §5.2.1.1: hl7-b2b in a client_credentials assertion, required by policy, validated,
    audited; it rides in the access token as `extensions` for the resource server."""
    rules = policy().udap
    extensions = claims.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise Refused("invalid_grant", "extensions must be a JSON object")
    extensions = extensions or {}
    if grant_type != "client_credentials":
        return {}
    missing = [e for e in rules.authorization_extensions_required if e not in extensions]
    if missing:
        raise Refused("invalid_grant", f"the {missing[0]} authorization extension is required")
    b2b = extensions.get(B2B)
    if b2b is None:
        return {}
    checked = validate_b2b(b2b)
    audit.record("udap.b2b", client_id=client.client_id, actor=f"client:{client.client_id}",
                 organization_id=checked["organization_id"],
                 organization_name=checked.get("organization_name", ""),
                 purpose_of_use=checked["purpose_of_use"],
                 subject_id=checked.get("subject_id", ""),
                 subject_name=checked.get("subject_name", ""),
                 consent_reference=checked.get("consent_reference", []))
    return {"extensions": {B2B: checked}}


_B2B_STRINGS = ("version", "subject_name", "subject_id", "subject_role", "organization_name",
                "organization_id")
_B2B_LISTS = ("purpose_of_use", "consent_policy", "consent_reference")


def validate_b2b(b2b: Any) -> dict[str, Any]:
    """The hl7-b2b object (IG §5.2.1.1): version "1", organization_id a URI, purpose_of_use a
    non-empty list, the rest strings or lists of strings of bounded size; unknown members are
    dropped."""
    if not isinstance(b2b, dict):
        raise Refused("invalid_grant", "hl7-b2b must be a JSON object")
    if b2b.get("version") != VERSION:
        raise Refused("invalid_grant", "hl7-b2b version must be 1")
    for name in policy().udap.b2b_required:
        if b2b.get(name) in (None, "", []):
            raise Refused("invalid_grant", f"hl7-b2b {name} is required")
    checked: dict[str, Any] = {}
    for name in _B2B_STRINGS:
        value = b2b.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not 0 < len(value) <= 512:
            raise Refused("invalid_grant", f"hl7-b2b {name} must be a string")
        checked[name] = value
    for name in _B2B_LISTS:
        value = b2b.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not 0 < len(value) <= 20 or \
                not all(isinstance(v, str) and 0 < len(v) <= 512 for v in value):
            raise Refused("invalid_grant", f"hl7-b2b {name} must be a list of strings")
        checked[name] = value
    if ":" not in checked.get("organization_id", ":"):
        raise Refused("invalid_grant", "hl7-b2b organization_id must be a URI")
    return checked


# -- communities (idp udap communities) ------------------------------------------------------
class CommunityError(ValueError):
    """The community cannot be added; the message says why."""


def add_community(name: str, anchors: bytes, intermediates: bytes = b"", crls: bytes = b"",
                  *, actor: str) -> UdapCommunity:
    """Add (or replace) a community in the database; the PEM inputs are checked first."""
    if not _NAME.match(name or ""):
        raise CommunityError("name: letters, digits, '.', '_' and '-' (1-100)")
    if name in policy().udap.communities:
        raise CommunityError(f"{name}: configured in policies/udap.toml")
    try:
        roots = trust.load_certificates(anchors)
        mids = trust.load_certificates(intermediates) if intermediates.strip() else []
        lists = trust.load_crls(crls) if crls.strip() else []
    except ValueError:
        raise CommunityError("anchors, intermediates and CRLs must be PEM or DER") from None
    if not roots:
        raise CommunityError("at least one anchor certificate")
    pem = serialization.Encoding.PEM
    row = db.session.execute(select(UdapCommunity).where(UdapCommunity.name == name)
                             ).scalar_one_or_none()
    now = clock.now()
    row = row or UdapCommunity(name=name, created_at=now)
    row.anchors_pem = "".join(c.public_bytes(pem).decode() for c in roots)
    row.intermediates_pem = "".join(c.public_bytes(pem).decode() for c in mids)
    row.crls_pem = "".join(c.public_bytes(pem).decode() for c in lists)
    row.updated_at = now
    db.session.add(row)
    audit.record("udap.community_saved", actor=actor, community=name,
                 anchors=[c.subject.rfc4514_string() for c in roots], crls=len(lists))
    return row


def describe_communities() -> list[dict[str, Any]]:
    """Each community with its anchors' subjects and expiry, for the CLI and the console."""
    return [{"name": c.name, "source": c.source,
             "anchors": [{"subject": a.subject.rfc4514_string(),
                          "not_after": a.not_valid_after_utc.isoformat()} for a in c.anchors],
             "intermediates": len(c.intermediates), "crls": len(c.crls)}
            for c in trust.communities()]


def b2b_activity(limit: int = 50) -> list[dict[str, Any]]:
    """The latest hl7-b2b token requests accepted (audit events udap.b2b), newest first."""
    rows = db.session.execute(select(AuditEvent).where(AuditEvent.event == "udap.b2b")
                              .order_by(AuditEvent.seq.desc()).limit(limit)).scalars()
    return [{"at": clock.aware(e.at), "client_id": e.client_id or "",
             "organization": (e.detail or {}).get("organization_name") or
             (e.detail or {}).get("organization_id", ""),
             "purpose_of_use": " ".join((e.detail or {}).get("purpose_of_use", []))}
            for e in rows]


def clients() -> list[dict[str, Any]]:
    rows = db.session.execute(select(UdapClient, Client).join(
        Client, Client.client_id == UdapClient.client_id).order_by(UdapClient.registered_at)
    ).all()
    return [{"client_id": link.client_id, "client_name": client.client_name, "iss": link.iss,
             "community": link.community, "subject": link.subject,
             "grant_types": list(client.grant_types or []),
             "pending": bool(client.pending)} for link, client in rows]
