"""WebAuthn (platform biometrics, security keys, passkeys) with py_webauthn.

The relying party is this IdP: RP ID = the issuer's host name, origin = the issuer's origin.
User verification is required in every ceremony (the factor then stands for possession and
a verified user: amr "hwk" + "user"); resident keys are preferred, so a credential can be a
passkey (sign-in without a username or password); attestation "none" (the IdP trusts the
user's choice of authenticator, not a vendor list).

Challenges are random, short lived and single use. A ceremony bound to a login attempt keeps
its challenge in LoginAttempt.challenge and takes it with one conditional UPDATE; a passkey
sign-in has no attempt before the user is known, so its challenge travels in the signed flow
cookie and is taken by inserting the attempt row whose key is derived from it (a replay hits
the primary key). Sign counters move with one conditional UPDATE; a counter that does not grow
marks the credential as possibly cloned, and it is refused from then on.

No Flask request objects here: the views parse and pass plain values.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import url_for
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, parse_attestation_object
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorAttachment,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db
from idp.mfa.factors.base import FactorType
from idp.mfa.factors.registry import builtin
from idp.mfa.models import Factor, LoginAttempt

RP_NAME = "Provider Identity"
KIND = "webauthn"
REGISTER, AUTHENTICATE = "reg", "auth"
CHALLENGE_BYTES = 32
MAX_CREDENTIAL_ID = 1024        # the credential_id column (base64url characters)
MAX_SIGN_COUNT = 2**31 - 1      # the sign_count column is a signed 32-bit integer
TRANSPORTS = {t.value for t in AuthenticatorTransport} | {"smart-card"}

FAILED = _l("Your security key or biometrics could not be verified. Try again, or choose "
            "another way to verify.")
EXPIRED = _l("This request has expired. Try again.")
CLONED = _l("This security key was blocked because it may have been copied. Use another way to "
          "verify and contact your facility's security team.")
KNOWN = _l("This security key or passkey is already registered.")
MODEL_NOT_ALLOWED = _l("Your organization does not allow this kind of security key. Use one "
                     "issued by your IT department.")


class WebAuthnError(Exception):
    """A ceremony was refused; `message` is safe to show, `counts` says whether it is a failed
    sign-in (lockout) or only a stale or malformed request."""

    def __init__(self, message: str, *, counts: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.counts = counts


# -- relying party -------------------------------------------------------------------------
def rp_id() -> str:
    """The issuer's host name. Browsers refuse an IP address here: serve the IdP under a
    name (http://localhost:PORT in development)."""
    return urlsplit(settings().issuer).hostname or "localhost"


def origin() -> str:
    parts = urlsplit(settings().issuer)
    return f"{parts.scheme}://{parts.netloc}"


def user_handle(user: User) -> bytes:
    """The WebAuthn user.id: the opaque OIDC subject (never the username or email), so a
    passkey names the account without revealing anything about the person."""
    return user.subject.encode()


def timeout_ms() -> int:
    return policy().mfa.code_lifetime * 1000


def _options(options: object) -> dict[str, Any]:
    return json.loads(options_to_json(options))


def _descriptor(factor: Factor) -> PublicKeyCredentialDescriptor:
    transports = [AuthenticatorTransport(t) for t in (factor.transports or [])
                  if t in {a.value for a in AuthenticatorTransport}]
    return PublicKeyCredentialDescriptor(id=base64url_to_bytes(factor.credential_id),
                                         transports=transports or None)


def user_factors(user: User) -> list[Factor]:
    """Every WebAuthn credential of the user (confirmed), for excludeCredentials."""
    return list(db.session.execute(select(Factor).where(
        Factor.user_id == user.id, Factor.kind == KIND, Factor.confirmed_at.is_not(None),
        Factor.credential_id.is_not(None))).scalars())


# -- challenges ----------------------------------------------------------------------------
def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def _store(attempt: LoginAttempt, ceremony: str, challenge: bytes) -> None:
    attempt.challenge = f"{ceremony}:{clock.timestamp()}:{bytes_to_base64url(challenge)}"
    db.session.flush()


def _fresh(issued: int) -> bool:
    age = clock.timestamp() - issued
    return 0 <= age <= policy().mfa.code_lifetime


def take_challenge(attempt: LoginAttempt, ceremony: str) -> bytes:
    """The attempt's challenge for this ceremony, consumed whatever happens next (one
    conditional UPDATE: two nodes cannot both take it)."""
    stored = attempt.challenge
    if not stored:
        raise WebAuthnError(EXPIRED, counts=False)
    taken = db.session.execute(
        update(LoginAttempt).where(LoginAttempt.id == attempt.id,
                                   LoginAttempt.challenge == stored)
        .values(challenge=None).execution_options(synchronize_session=False)).rowcount
    db.session.expire(attempt, ["challenge"])
    kind, _, rest = stored.partition(":")
    issued, _, encoded = rest.partition(":")
    if not taken or kind != ceremony or not issued.isdigit() or not _fresh(int(issued)):
        raise WebAuthnError(EXPIRED, counts=False)
    return base64url_to_bytes(encoded)


# -- registration --------------------------------------------------------------------------
def registration_options(user: User, attempt: LoginAttempt, *, attestation: str | None = None,
                         attachment: str | None = None) -> dict[str, Any]:
    """Options for navigator.credentials.create(), in the WebAuthn Level 3 JSON form.
    `attestation` (default: policies/mfa.toml) and `attachment` ("cross-platform" |
    "platform"; default: any) serve a caller that needs an attested kind of key (EPCS)."""
    challenge = new_challenge()
    options = generate_registration_options(
        rp_id=rp_id(), rp_name=RP_NAME, user_id=user_handle(user), user_name=user.username,
        user_display_name=user.name or user.username, challenge=challenge,
        timeout=timeout_ms(), attestation=AttestationConveyancePreference(
            attestation or policy().mfa.webauthn.attestation),
        authenticator_selection=AuthenticatorSelectionCriteria(
            authenticator_attachment=AuthenticatorAttachment(attachment) if attachment else None,
            resident_key=ResidentKeyRequirement(policy().mfa.webauthn.resident_key),
            user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[_descriptor(f) for f in user_factors(user)])
    _store(attempt, REGISTER, challenge)
    return _options(options)


@dataclass(frozen=True)
class Registration:
    """A verified navigator.credentials.create() response: the confirmed, unsaved Factor and
    what the attestation said. `x5c`: the attestation certificate chain (DER, leaf first;
    empty for "none" and self attestation); `backup_eligible` / `backup_state`: the BE / BS
    flags of the authenticator data (a synced passkey is backup eligible); `attachment`: what
    the browser reported (not signed by the authenticator)."""

    factor: Factor
    fmt: str
    x5c: tuple[bytes, ...]
    backup_eligible: bool
    backup_state: bool
    attachment: str | None


def verify_registration(user: User, attempt: LoginAttempt, credential: object,
                        label: str | None = None) -> Factor:
    """Check a navigator.credentials.create() response; a confirmed, unsaved Factor."""
    return register(user, attempt, credential, label).factor


def register(user: User, attempt: LoginAttempt, credential: object, label: str | None = None
             ) -> Registration:
    """verify_registration with what the attestation said. py_webauthn verifies the
    attestation statement of every format (for "packed" with x5c: signed by x5c[0]); whether
    x5c chains to a trusted root is the caller's decision (it is given no roots here)."""
    expected = take_challenge(attempt, REGISTER)
    if not isinstance(credential, dict):
        raise WebAuthnError(FAILED)
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=expected, expected_rp_id=rp_id(),
            expected_origin=origin(), require_user_presence=True,
            require_user_verification=True)
    except Exception:  # noqa: BLE001 - any malformed or unverifiable response is refused
        raise WebAuthnError(FAILED) from None
    credential_id = bytes_to_base64url(verified.credential_id)
    if len(credential_id) > MAX_CREDENTIAL_ID or verified.sign_count > MAX_SIGN_COUNT:
        raise WebAuthnError(FAILED)
    if find_factor(credential_id) is not None:
        raise WebAuthnError(KNOWN, counts=False)
    allowed = policy().mfa.webauthn.allowed_aaguids
    if allowed and str(verified.aaguid).lower() not in allowed:
        raise WebAuthnError(MODEL_NOT_ALLOWED, counts=False)
    response = credential.get("response")
    raw = response.get("transports") if isinstance(response, dict) else None
    transports = sorted({t for t in raw if isinstance(t, str) and t in TRANSPORTS}) \
        if isinstance(raw, list) else []
    now = clock.now()
    factor = Factor(user_id=user.id, kind=KIND, label=clean_label(label), created_at=now,
                    confirmed_at=now, credential_id=credential_id,
                    public_key=verified.credential_public_key, sign_count=verified.sign_count,
                    transports=transports, aaguid=str(verified.aaguid)[:64],
                    user_verified=verified.user_verified, clone_warning=False)
    statement = parse_attestation_object(verified.attestation_object).att_stmt
    attachment = credential.get("authenticatorAttachment")
    return Registration(
        factor=factor, fmt=AttestationFormat(verified.fmt).value,
        x5c=tuple(statement.x5c or ()),
        backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
        backup_state=bool(verified.credential_backed_up),
        attachment=attachment if attachment in ("platform", "cross-platform") else None)


def save(factor: Factor) -> bool:
    """Add a new credential; False when the same credential id was saved concurrently."""
    try:
        with db.session.begin_nested():
            db.session.add(factor)
    except IntegrityError:
        return False
    return True


def clean_label(label: str | None) -> str:
    text = "".join(c for c in (label or "") if c.isprintable()).strip()[:100]
    return text or policy().mfa.factors[KIND].label


# -- authentication ------------------------------------------------------------------------
def authentication_options(attempt: LoginAttempt, factors: list[Factor]) -> dict[str, Any]:
    """Options for navigator.credentials.get() naming the user's usable credentials."""
    usable = [f for f in factors if f.kind == KIND and f.credential_id and not f.clone_warning]
    if not usable:
        # Never send an empty allowCredentials here: that would accept any passkey.
        raise WebAuthnError(CLONED if factors else FAILED, counts=False)
    challenge = new_challenge()
    options = generate_authentication_options(
        rp_id=rp_id(), challenge=challenge, timeout=timeout_ms(),
        allow_credentials=[_descriptor(f) for f in usable],
        user_verification=UserVerificationRequirement.REQUIRED)
    _store(attempt, AUTHENTICATE, challenge)
    return _options(options)


def verify_authentication(user: User, attempt: LoginAttempt, credential: object,
                          factors: list[Factor]) -> Factor:
    """The second factor of a login attempt or a step-up: the assertion must come from one
    of `factors` (the user's usable credentials)."""
    expected = take_challenge(attempt, AUTHENTICATE)
    factor = next((f for f in factors if f.kind == KIND and f.user_id == user.id
                   and f.credential_id == credential_id_of(credential)), None)
    if factor is None:
        raise WebAuthnError(FAILED)
    check_assertion(factor, credential, expected)
    return factor


def passkey_options() -> tuple[dict[str, Any], str]:
    """Options for a passkey sign-in (no username: empty allowCredentials, the authenticator
    offers its discoverable credentials) and the challenge for the caller to keep."""
    challenge = new_challenge()
    options = generate_authentication_options(
        rp_id=rp_id(), challenge=challenge, timeout=timeout_ms(), allow_credentials=[],
        user_verification=UserVerificationRequirement.REQUIRED)
    return _options(options), bytes_to_base64url(challenge)


def decode(value: str) -> bytes:
    try:
        return base64url_to_bytes(value)
    except ValueError:
        raise WebAuthnError(EXPIRED, counts=False) from None


def passkey_challenge_fresh(issued: object) -> bool:
    return isinstance(issued, int) and _fresh(issued)


def passkey_attempt(user: User, challenge: str) -> LoginAttempt:
    """Take a passkey challenge: the login attempt's id is derived from it, so inserting the
    row a second time (a replayed response, on any node) fails. No password step: amr
    starts empty and the credential brings "hwk" and "user"."""
    now = clock.now()
    attempt = LoginAttempt(
        id="passkey-" + hashlib.sha256(challenge.encode()).hexdigest()[:48], user_id=user.id,
        purpose="login", amr=[], created_at=now,
        expires_at=now + timedelta(seconds=policy().mfa.login_attempt_lifetime))
    try:
        with db.session.begin_nested():
            db.session.add(attempt)
    except IntegrityError:
        raise WebAuthnError(EXPIRED, counts=False) from None
    return attempt


def credential_id_of(credential: object) -> str | None:
    if not isinstance(credential, dict):
        return None
    value = credential.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= MAX_CREDENTIAL_ID else None


def find_factor(credential_id: str | None) -> Factor | None:
    if not credential_id:
        return None
    return db.session.execute(select(Factor).where(
        Factor.credential_id == credential_id, Factor.kind == KIND,
        Factor.confirmed_at.is_not(None))).scalar_one_or_none()


def check_passkey_user(user: User, credential: object) -> None:
    """A discoverable credential returns the user handle it was created with: it must name
    the account the credential id belongs to."""
    response = credential.get("response") if isinstance(credential, dict) else None
    handle = response.get("userHandle") if isinstance(response, dict) else None
    if handle is None:
        return
    try:
        ok = isinstance(handle, str) and base64url_to_bytes(handle) == user_handle(user)
    except ValueError:
        ok = False
    if not ok:
        raise WebAuthnError(FAILED)


@dataclass(frozen=True)
class Assertion:
    sign_count: int
    user_verified: bool


def check_assertion(factor: Factor, credential: object, expected_challenge: bytes
                    ) -> Assertion:
    """Signature, origin, RP ID, user presence and verification, then the sign counter."""
    if factor.clone_warning:
        raise WebAuthnError(CLONED)
    if not isinstance(credential, dict) or factor.public_key is None:
        raise WebAuthnError(FAILED)
    try:
        # Counter 0 here: the library's own counter check would refuse without telling us
        # why; ours below marks the credential.
        verified = verify_authentication_response(
            credential=credential, expected_challenge=expected_challenge,
            expected_rp_id=rp_id(), expected_origin=origin(),
            credential_public_key=factor.public_key, credential_current_sign_count=0,
            require_user_verification=True)
    except Exception:  # noqa: BLE001 - any malformed or unverifiable response is refused
        raise WebAuthnError(FAILED) from None
    if bytes_to_base64url(verified.credential_id) != factor.credential_id:
        raise WebAuthnError(FAILED)
    count = verified.new_sign_count
    if count > MAX_SIGN_COUNT:
        raise WebAuthnError(FAILED)
    # A counter must grow; 0 forever means the authenticator keeps none (many passkeys).
    grows = Factor.sign_count < count if count > 0 else Factor.sign_count == 0
    advanced = db.session.execute(
        update(Factor).where(Factor.id == factor.id, Factor.clone_warning.is_(False), grows)
        .values(sign_count=count, user_verified=True)
        .execution_options(synchronize_session=False)).rowcount
    if not advanced:
        _mark_cloned(factor, count)
        raise WebAuthnError(CLONED)
    db.session.expire(factor, ["sign_count", "user_verified"])
    return Assertion(count, verified.user_verified)


def _mark_cloned(factor: Factor, received: int) -> None:
    """The counter did not grow: two authenticators may hold this key. Flag it and audit,
    in one transaction; the caller commits."""
    stored = db.session.execute(select(Factor.sign_count).where(Factor.id == factor.id)
                                ).scalar_one_or_none()
    db.session.execute(update(Factor).where(Factor.id == factor.id)
                       .values(clone_warning=True)
                       .execution_options(synchronize_session=False))
    db.session.expire(factor, ["clone_warning"])
    audit.record("mfa.webauthn_clone_warning", user_id=factor.user_id, factor_id=factor.id,
                 stored_count=stored, received_count=received)


@builtin
class WebAuthnFactor(FactorType):
    """Verified by the JSON ceremony of /mfa/webauthn/options and /verify (static/js), not by
    a form; enrolled likewise (idp.mfa.webauthn_views)."""

    kind = KIND
    icon = "fingerprint"
    verifies_form = False
    challenge_template = "mfa/_webauthn_challenge.html"

    def enroll_url(self, next_url: str | None) -> str | None:
        return url_for("mfa.enroll_webauthn", next=next_url)

    def enroll(self, user: User, **details: Any) -> Factor:
        """details: attempt (holding the registration challenge), credential (the browser's
        JSON), label."""
        return verify_registration(user, details["attempt"], details["credential"],
                                   details.get("label"))
