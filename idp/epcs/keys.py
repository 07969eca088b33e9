"""EPCS keys (21 CFR 1311.115(b)): the hard token of a controlled-substance signature is a
roaming, device-bound security key of a FIPS 140 validated model, proved by its attestation.

Enrolment is its own ceremony, apart from everyday passkeys (attestation "none"): attestation
"direct", authenticatorAttachment "cross-platform", user verification required. The response
is verified by py_webauthn (challenge, origin, RP ID, user verification, and the attestation
statement's signature), then here against policies/epcs_keys.toml:

- a format of `formats` with a certificate chain (no "none", no self attestation), the chain
  ending at one of the trust anchors `roots` (`anchored`);
- for "packed", the attestation certificate requirements of WebAuthn §8.2.1 (version 3,
  subject OU "Authenticator Attestation", basicConstraints CA false, and an
  id-fido-gen-ce-aaguid extension, when present, naming the AAGUID of the authenticator data);
- an AAGUID listed under [aaguids];
- backup eligibility 0 (BE: a synced passkey can be copied off the device);
- not a platform authenticator (attachment "platform" or transport "internal") unless
  `allow_platform_biometric`.

A refused key is not saved; each outcome is audited (epcs.key_enrolled, epcs.key_refused with
the reason). Only credentials with an EpcsKey row that still meets the policy count at a
ceremony (`eligible`). No Flask request objects here.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy
from idp.core.i18n import lazy_gettext as _l
from idp.epcs.models import EpcsKey
from idp.extensions import db
from idp.mfa.factors import webauthn
from idp.mfa.models import Factor, LoginAttempt

ATTACHMENT = "cross-platform"
ATTESTATION = "direct"
# id-fido-gen-ce-aaguid (FIDO Metadata / WebAuthn §8.2.1)
AAGUID_EXTENSION = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
ATTESTATION_OU = "Authenticator Attestation"

REFUSED = {
    "no_attestation": _l(
        "This security key did not prove its make and model (no attestation). Signing "
        "controlled-substance prescriptions needs a security key issued for it; use that key "
        "and allow the browser to share its make and model."),
    "untrusted": _l(
        "This security key's attestation could not be verified against the manufacturers' "
        "certificates your organization trusts. Use a security key issued for prescribing."),
    "model_not_listed": _l(
        "This security key model is not on your organization's list of FIPS 140 validated "
        "keys for signing controlled-substance prescriptions. Use a key issued for prescribing."),
    "synced": _l(
        "This is a synced passkey (it can be copied to your other devices). Signing "
        "controlled-substance prescriptions needs a security key that keeps its key on the "
        "device."),
    "platform": _l(
        "This is the computer's or phone's built-in authenticator. Signing controlled-substance "
        "prescriptions needs a separate hardware security key."),
}


class EpcsKeyRefused(Exception):
    """The key does not qualify; `reason` is a key of REFUSED, `message` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = str(REFUSED[reason])


def options(user: User, attempt: LoginAttempt) -> dict:
    """navigator.credentials.create() options for an EPCS key."""
    return webauthn.registration_options(user, attempt, attestation=ATTESTATION,
                                         attachment=ATTACHMENT)


def _is_ca(_policy: object, _cert: x509.Certificate, ext: x509.BasicConstraints | None) -> None:
    if ext is None or not ext.ca:
        raise ValueError("an issuer of the attestation chain is not a CA")


# Attestation certificates are not web PKI certificates (no SAN, no EKU): the path is built and
# checked by cryptography's verifier with the RFC 5280 rules only, plus "every issuer is a CA".
_CA_POLICY = ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, Criticality.AGNOSTIC, _is_ca)


def _same_anchor(cert: x509.Certificate, anchor: x509.Certificate) -> bool:
    """RFC 5280 §6.1.1: a trust anchor is a name and a public key. A self-issued attestation
    certificate with the anchor's name and key (Chromium's virtual authenticator re-issues its
    certificate at each registration) is that anchor."""
    return (cert.subject == anchor.subject and cert.issuer == cert.subject
            and cert.public_key() == anchor.public_key())


def anchored(x5c: tuple[bytes, ...], roots: tuple[bytes, ...]) -> bool:
    """Does the attestation chain x5c (DER, leaf first) reach one of `roots` (PEM), valid now?
    Path building and checking are cryptography's (x509.verification), never ours."""
    try:
        chain = [x509.load_der_x509_certificate(c) for c in x5c]
        anchors = [x509.load_pem_x509_certificate(r) for r in roots]
    except ValueError:
        return False
    if not chain or not anchors:
        return False
    now = clock.now()
    leaf = chain[0]
    if len(chain) == 1 and any(_same_anchor(leaf, a) for a in anchors):
        return leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc and any(
            _same_anchor(leaf, a) and a.not_valid_before_utc <= now <= a.not_valid_after_utc
            for a in anchors)
    verifier = (PolicyBuilder().store(Store(anchors)).time(now)
                .extension_policies(ca_policy=_CA_POLICY,
                                    ee_policy=ExtensionPolicy.permit_all())
                .build_client_verifier())
    try:
        verifier.verify(leaf, chain[1:])
    except (VerificationError, ValueError, TypeError):
        return False
    return True


def _packed_certificate_problem(leaf: x509.Certificate, aaguid: str) -> bool:
    """WebAuthn §8.2.1 packed attestation certificate requirements; True when not met."""
    if leaf.version != x509.Version.v3:
        return True
    units = [a.value for a in leaf.subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if units != [ATTESTATION_OU]:
        return True
    try:
        if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return True
    except x509.ExtensionNotFound:
        return True
    try:
        found = leaf.extensions.get_extension_for_oid(AAGUID_EXTENSION).value
    except x509.ExtensionNotFound:
        return False
    raw = found.value if isinstance(found, x509.UnrecognizedExtension) else b""
    # An OCTET STRING (04 10) holding the 16 bytes of the AAGUID.
    return raw[2:] != bytes.fromhex(aaguid.replace("-", "")) or raw[:2] != b"\x04\x10"


def check(registration: webauthn.Registration) -> str | None:
    """The reason this verified registration does not qualify as an EPCS key, or None."""
    rules = policy().epcs.keys
    factor = registration.factor
    if registration.fmt not in rules.formats or not registration.x5c:
        return "no_attestation"
    if not anchored(registration.x5c, rules.roots):
        return "untrusted"
    leaf = x509.load_der_x509_certificate(registration.x5c[0])
    if registration.fmt == "packed" and _packed_certificate_problem(leaf, factor.aaguid or ""):
        return "untrusted"
    if (factor.aaguid or "").lower() not in rules.aaguids:
        return "model_not_listed"
    if registration.backup_eligible or registration.backup_state:
        return "synced"
    if _platform(registration.attachment, factor.transports) and \
            not rules.allow_platform_biometric:
        return "platform"
    return None


def _platform(attachment: str | None, transports: list | None) -> bool:
    return attachment == "platform" or "internal" in (transports or [])


def enroll(user: User, attempt: LoginAttempt, credential: object,
           label: str | None) -> Factor:
    """Verify an EPCS key's registration and keep it (factor + EpcsKey, audited); the caller
    commits. WebAuthnError (malformed, unverifiable, untrusted chain, known) or
    EpcsKeyRefused (audited: the caller commits the refusal too)."""
    registration = webauthn.register(user, attempt, credential, label)
    reason = check(registration)
    factor = registration.factor
    if reason:
        audit.record("epcs.key_refused", user_id=user.id, reason=reason,
                     aaguid=factor.aaguid, fmt=registration.fmt,
                     backup_eligible=registration.backup_eligible,
                     attachment=registration.attachment, transports=factor.transports)
        raise EpcsKeyRefused(reason)
    if not webauthn.save(factor):
        raise webauthn.WebAuthnError(webauthn.KNOWN, counts=False)
    aaguid = (factor.aaguid or "").lower()
    model = policy().epcs.keys.aaguids[aaguid]
    db.session.add(EpcsKey(
        factor_id=factor.id, user_id=user.id, aaguid=aaguid, model=model[:200],
        attestation_fmt=registration.fmt, attestation_verified=True,
        attestation_cert_sha256=hashlib.sha256(registration.x5c[0]).hexdigest(),
        attachment="platform" if _platform(registration.attachment, factor.transports)
        else registration.attachment, backup_eligible=registration.backup_eligible,
        backup_state=registration.backup_state, enrolled_at=clock.now()))
    audit.record("mfa.enrolled", user_id=user.id, factor=factor.kind, label=factor.label)
    audit.record("epcs.key_enrolled", user_id=user.id, factor_id=factor.id, aaguid=aaguid,
                 model=model, fmt=registration.fmt, attachment=registration.attachment)
    return factor


def keys_of(user_id: int) -> list[EpcsKey]:
    return list(db.session.execute(select(EpcsKey).join(
        Factor, Factor.id == EpcsKey.factor_id).where(
        EpcsKey.user_id == user_id, Factor.confirmed_at.is_not(None))
        .order_by(EpcsKey.enrolled_at)).scalars())


def qualifies(key: EpcsKey) -> bool:
    """The rule again, at the ceremony: the model still listed, still device-bound and
    roaming (or platform allowed)."""
    rules = policy().epcs.keys
    return (key.attestation_verified and key.aaguid in rules.aaguids
            and not key.backup_eligible and not key.backup_state
            and (not _platform(key.attachment, None) or rules.allow_platform_biometric))


def eligible(factors: list[Factor]) -> list[Factor]:
    """The factors among `factors` that count as the EPCS hard token."""
    wanted = [f for f in factors if f.kind == webauthn.KIND]
    if not wanted:
        return []
    counted = {k.factor_id for k in db.session.execute(select(EpcsKey).where(
        EpcsKey.factor_id.in_([f.id for f in wanted]))).scalars() if qualifies(k)}
    return [f for f in wanted if f.id in counted]
