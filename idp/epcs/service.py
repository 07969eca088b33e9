"""EPCS: the per-user permission two administrators grant (21 CFR 1311.125) and the signing
ceremony at each controlled-substance signature (1311.115/1311.140). No Flask request objects.

The ceremony: a client asks /authorize with acr_values containing the EPCS acr and a
`binding_message` (the prescription reference). Whatever the SSO session holds, the user then
enters the password again and uses a hardware factor (policies/epcs.toml); the result is kept
on the ceremony row, never on the session, and serves exactly one authorization response.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date, timedelta

from flask import g, has_request_context
from sqlalchemy import func, select, update

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.epcs import details as rx
from idp.epcs import keys
from idp.epcs.models import DeaRegistration, EpcsCeremony, EpcsPermission
from idp.extensions import db
from idp.mfa import flow
from idp.mfa.models import Factor, LoginAttempt
from idp.sessions.models import SsoSession

NEEDS_HARDWARE = (
    "Signing controlled-substance prescriptions (DEA EPCS) needs your password and a security "
    "key enrolled for prescribing at every signature. This account has no security key "
    "enrolled for prescribing; authenticator-app codes, text messages (SMS), email codes, "
    "recovery codes and everyday passkeys do not count. Enroll a security key for prescribing "
    "at the identity provider (/epcs/keys), then sign again.")
# Every message below goes out as error_description: ASCII without quote or backslash
# (RFC 6749 4.1.2.1).
NO_PERMISSION = (
    "This account does not hold the EPCS permission to sign controlled-substance "
    "prescriptions. Two administrators must grant it (one proposes, another approves).")
NO_DEA = ("No DEA registration is on file for this account, so it cannot sign "
          "controlled-substance prescriptions. Ask the credentialing office to record it.")
DEA_EXPIRED = ("The DEA registration on file for this account expired on {}. Signing "
               "controlled-substance prescriptions is suspended until the renewed registration "
               "is recorded by the credentialing office.")
DEA_MISMATCH = ("The prescriptions name a DEA registration number that is not the one on file "
                "for this account; nothing was signed.")
NOT_MET = ("The signing ceremony did not meet the EPCS requirements (password and a security "
           "key or biometrics); nothing was signed. Try again.")


class EpcsError(Exception):
    """A permission change that is not allowed; str() is the readable reason."""


# -- policy --------------------------------------------------------------------------------
def epcs_acr() -> str:
    return policy().epcs.acr


def requested(params: dict) -> bool:
    """Does this authorization request ask for the EPCS acr?"""
    return epcs_acr() in (params.get("acr_values") or "").split()


def binding_message_problem(value: object) -> str | None:
    """None when `value` is an acceptable prescription reference, else what is wrong."""
    rules = policy().epcs
    if not isinstance(value, str) or not value.strip():
        return "binding_message (the prescription reference) is required for EPCS signing"
    if len(value) > rules.binding_message_max_length:
        return f"binding_message is longer than {rules.binding_message_max_length} characters"
    if not re.fullmatch(f"[{rules.binding_message_charset}]+", value):
        return f"binding_message may hold only these characters: {rules.binding_message_charset}"
    return None


def hardware_factors(user: User) -> list[Factor]:
    """Confirmed factors of the user's role-allowed kinds that count as the hardware factor."""
    return hardware_only(flow.factors(user))


def hardware_only(factors: list[Factor]) -> list[Factor]:
    """Of `factors`, those of the policy's hardware kinds; a WebAuthn credential only when it
    is an EPCS key that still meets policies/epcs_keys.toml (idp.epcs.keys)."""
    kinds = set(policy().epcs.hardware_factors)
    counted = {f.id for f in keys.eligible(factors)}
    return [f for f in factors if f.kind in kinds
            and (f.kind != keys.webauthn.KIND or f.id in counted)]


def factor_kinds(amr: list[str], kind: str | None) -> list[str]:
    """The factor kinds one ceremony used: the password (amr pwd) and the second factor."""
    kinds = ["password"] if "pwd" in amr else []
    if kind is not None:
        kinds.append(kind)
    return kinds


# -- permission (two admins) ---------------------------------------------------------------
def live_permission(user_id: int) -> EpcsPermission | None:
    """The user's proposed or active permission (at most one lives at a time)."""
    return db.session.execute(select(EpcsPermission).where(
        EpcsPermission.user_id == user_id, EpcsPermission.revoked_at.is_(None))
        .order_by(EpcsPermission.id.desc()).limit(1)).scalar_one_or_none()


def has_permission(user: User) -> bool:
    held = live_permission(user.id)
    return held is not None and held.approved_at is not None


def entitlements(user: User) -> list[str]:
    """The `entitlements` claim (released with the roles scope): ["epcs"] when granted.
    Asked for twice per token response (access token, ID token): read once per request."""
    if not has_request_context():
        return ["epcs"] if has_permission(user) else []
    known = g.setdefault("epcs_entitlements", {})
    if user.id not in known:
        known[user.id] = ["epcs"] if has_permission(user) else []
    return list(known[user.id])


def propose(user: User, admin: User) -> EpcsPermission:
    if user.id == admin.id:
        raise EpcsError(_("You cannot propose the EPCS permission for your own account."))
    role = policy().roles.get(user.role)
    if role is None or not role.clinical:
        raise EpcsError(_("Only prescribers (clinical roles) can hold the EPCS permission."))
    if user.disabled:
        raise EpcsError(_("The account is disabled."))
    held = live_permission(user.id)
    if held is not None:
        raise EpcsError(_("The account already has an EPCS permission waiting for approval.")
                        if held.approved_at is None else
                        _("The account already has an EPCS permission granted."))
    item = EpcsPermission(user_id=user.id, proposed_by=admin.id, proposed_at=clock.now())
    db.session.add(item)
    db.session.flush()
    audit.record("epcs.permission_proposed", user_id=user.id, actor=f"admin:{admin.id}",
                 permission_id=item.id)
    return item


def approve(item: EpcsPermission, admin: User) -> None:
    """The second admin's approval. The proposer (and the subject) cannot approve; a refused
    approval is audited too."""
    problem = None
    if item.revoked_at is not None or item.approved_at is not None:
        problem = _("This proposal is no longer waiting for approval.")
    elif admin.id == item.proposed_by:
        problem = _("A different administrator must approve: the one who proposed the EPCS "
                    "permission cannot also approve it.")
    elif admin.id == item.user_id:
        problem = _("You cannot approve the EPCS permission for your own account.")
    if problem:
        audit.record("epcs.permission_approval_refused", user_id=item.user_id,
                     actor=f"admin:{admin.id}", permission_id=item.id)
        raise EpcsError(problem)
    done = db.session.execute(
        update(EpcsPermission).where(EpcsPermission.id == item.id,
                                     EpcsPermission.approved_at.is_(None),
                                     EpcsPermission.revoked_at.is_(None))
        .values(approved_by=admin.id, approved_at=clock.now())
        .execution_options(synchronize_session=False)).rowcount
    if not done:
        raise EpcsError(_("This proposal is no longer waiting for approval."))
    db.session.refresh(item)
    audit.record("epcs.permission_approved", user_id=item.user_id, actor=f"admin:{admin.id}",
                 permission_id=item.id, proposed_by=item.proposed_by)


def revoke(item: EpcsPermission, admin: User) -> None:
    """One admin suffices to take the permission away (or withdraw a proposal)."""
    if item.revoked_at is not None:
        raise EpcsError(_("The permission was revoked already."))
    was = item.state
    item.revoked_by, item.revoked_at = admin.id, clock.now()
    audit.record("epcs.permission_revoked" if was == "active" else
                 "epcs.permission_withdrawn", user_id=item.user_id,
                 actor=f"admin:{admin.id}", permission_id=item.id)


def withdraw_on_role_change(user_id: int, role: str, clinical: bool, actor: str) -> None:
    """idp.core.events ROLE_CHANGED: a role that is not clinical cannot hold the permission
    (as the console's role change does); a live one is revoked in the caller's transaction."""
    held = live_permission(user_id) if not clinical else None
    if held is None:
        return
    was = held.state
    held.revoked_at = clock.now()
    audit.record("epcs.permission_revoked" if was == "active" else
                 "epcs.permission_withdrawn", user_id=user_id, actor=actor,
                 permission_id=held.id, reason=f"role_changed:{role}")


def permissions(limit: int = 200) -> list[EpcsPermission]:
    return list(db.session.execute(select(EpcsPermission).order_by(
        EpcsPermission.revoked_at.is_not(None), EpcsPermission.id.desc()).limit(limit)
    ).scalars())


def access_report() -> list[dict]:
    """1311.125 periodic review: every active EPCS permission, its two administrators, days
    since approval (`due` past policy reapproval_interval_days), the DEA registration's
    expiry and how many EPCS keys count now."""
    now = clock.now()
    interval = policy().epcs.reapproval_interval_days
    rows = []
    for item in permissions(limit=10_000):
        if item.state != "active" or item.approved_at is None:
            continue
        age = (now - item.approved_at).days
        dea = dea_registration(item.user_id)
        rows.append({
            "username": item.user.username, "role": item.user.role,
            "proposed_by": item.proposer.username if item.proposer else None,
            "approved_by": item.approver.username if item.approver else None,
            "approved_at": item.approved_at.isoformat(), "days_since_approval": age,
            "due": age > interval,
            "dea_expires_on": dea.expires_on.isoformat() if dea else None,
            "dea_expired": bool(dea and dea.expires_on < now.date()),
            "epcs_keys": len(hardware_factors(item.user))})
    return sorted(rows, key=lambda r: (not r["due"], -r["days_since_approval"]))


# -- DEA registration (1311.105/.110 proofing, 1311.125 current registration) ---------------
DEA_NUMBER = re.compile(r"[A-Z][A-Z9]\d{7}")


def dea_number_valid(number: str) -> bool:
    """The DEA number's form and check digit: (d1 + d3 + d5) + 2 * (d2 + d4 + d6) ends in d7."""
    if not DEA_NUMBER.fullmatch(number):
        return False
    d = [int(c) for c in number[2:]]
    return (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10 == d[6]


def dea_registration(user_id: int) -> DeaRegistration | None:
    return db.session.get(DeaRegistration, user_id)


def record_dea(user: User, number: str, expires_on: date, checked_by: str,
               actor: str) -> DeaRegistration:
    """Record (or renew) the practitioner's DEA registration as checked by `checked_by`;
    audited. The caller commits."""
    number = number.strip().upper()
    if not dea_number_valid(number):
        raise EpcsError("Not a DEA registration number (two letters, seven digits, the last "
                        "one the check digit).")
    checked_by = checked_by.strip()
    if not checked_by or len(checked_by) > 200:
        raise EpcsError("Name who checked the registration (at most 200 characters).")
    held = dea_registration(user.id)
    if held is None:
        held = DeaRegistration(user_id=user.id)
        db.session.add(held)
    held.dea_number, held.expires_on, held.checked_by = number, expires_on, checked_by
    held.recorded_by, held.recorded_at = actor[:100], clock.now()
    audit.record("epcs.dea_recorded", user_id=user.id, actor=actor, dea_number=number,
                 expires_on=expires_on.isoformat(), checked_by=checked_by)
    return held


def dea_problem(user: User, signed: list | None) -> tuple[str, str] | None:
    """Why this practitioner's DEA registration does not allow signing `signed` now (reason
    for the audit, message for the client), or None."""
    held = dea_registration(user.id)
    if held is None:
        return ("no_dea_registration", NO_DEA) if policy().epcs.dea_registration_required \
            else None
    if held.expires_on < clock.now().date():
        return "dea_expired", DEA_EXPIRED.format(held.expires_on.isoformat())
    if any(entry["prescriber"]["dea_number"] != held.dea_number for entry in signed or []):
        return "dea_mismatch", DEA_MISMATCH
    return None


def dea_report(within_days: int | None = None) -> list[dict]:
    """Registrations expired or expiring within `within_days` (policy
    dea_expiry_warning_days by default), soonest first."""
    days = policy().epcs.dea_expiry_warning_days if within_days is None else within_days
    today = clock.now().date()
    rows = db.session.execute(select(DeaRegistration, User).join(
        User, User.id == DeaRegistration.user_id).where(
        DeaRegistration.expires_on <= today + timedelta(days=days))
        .order_by(DeaRegistration.expires_on)).all()
    return [{"username": user.username, "dea_number": reg.dea_number,
             "expires_on": reg.expires_on.isoformat(),
             "days_left": (reg.expires_on - today).days,
             "expired": reg.expires_on < today, "epcs_permission": has_permission(user),
             "checked_by": reg.checked_by} for reg, user in rows]
def proposed_count() -> int:
    """Permissions proposed and waiting for a second administrator (the dashboard)."""
    return int(db.session.execute(select(func.count()).select_from(EpcsPermission).where(
        EpcsPermission.approved_at.is_(None), EpcsPermission.revoked_at.is_(None))).scalar_one())


# -- the ceremony --------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """What /authorize does with an EPCS request: `login` (no session yet: sign in first),
    `refuse` (error, description), `ceremony` (send the browser to ceremony_id's page) or
    `done` (issue the code with this ceremony's acr, amr and auth_time)."""

    kind: str
    error: str = ""
    description: str = ""
    ceremony: EpcsCeremony | None = None


def authorize_step(sso: SsoSession | None, params: dict, request_key: str, client_id: str,
                   next_url: str) -> Step:
    problem = binding_message_problem(params.get("binding_message"))
    if problem:
        return Step("refuse", "invalid_request", problem)
    # Checked (channel, schema, sizes) by the request rule idp.epcs.details.validate_request.
    signed = rx.parse(params[rx.PARAM]) if rx.requested(params) else None
    signed_hash = rx.sha256(signed) if signed is not None else None
    if sso is None:
        return Step("login")
    user = sso.user
    message = params["binding_message"]
    if not has_permission(user):
        audit.record("epcs.refused", user_id=user.id, client_id=client_id,
                     reason="no_permission", binding_message=message)
        return Step("refuse", "access_denied", NO_PERMISSION)
    dea = dea_problem(user, signed)
    if dea is not None:
        audit.record("epcs.refused", user_id=user.id, client_id=client_id, reason=dea[0],
                     binding_message=message)
        return Step("refuse", "access_denied", dea[1])
    finished = _finished(user.id, client_id, request_key)
    if finished is not None:
        if finished.acr != epcs_acr() or finished.details_sha256 != signed_hash:
            _use(finished)
            return Step("refuse", "unmet_authentication_requirements", NOT_MET)
        if _use(finished):
            return Step("done", ceremony=finished)
    if not hardware_factors(user):
        audit.record("epcs.refused", user_id=user.id, client_id=client_id,
                     reason="no_hardware_factor", binding_message=message)
        return Step("refuse", "unmet_authentication_requirements", NEEDS_HARDWARE)
    if "none" in (params.get("prompt") or "").split():
        return Step("refuse", "interaction_required",
                    "EPCS signing needs the user at every signature")
    now = clock.now()
    ceremony = EpcsCeremony(
        id=secrets.token_urlsafe(24), user_id=user.id, client_id=client_id, sid=sso.id,
        request_key=request_key, binding_message=message, next_url=next_url, created_at=now,
        expires_at=now + timedelta(seconds=policy().epcs.ceremony_lifetime), amr=[],
        authorization_details=signed, details_sha256=signed_hash)
    db.session.add(ceremony)
    audit.record("epcs.ceremony_started", user_id=user.id, client_id=client_id,
                 binding_message=message, ceremony=ceremony.id, details_sha256=signed_hash,
                 prescriptions=len(signed or []))
    return Step("ceremony", ceremony=ceremony)


def _finished(user_id: int, client_id: str, request_key: str) -> EpcsCeremony | None:
    return db.session.execute(select(EpcsCeremony).where(
        EpcsCeremony.user_id == user_id, EpcsCeremony.client_id == client_id,
        EpcsCeremony.request_key == request_key, EpcsCeremony.completed_at.is_not(None),
        EpcsCeremony.used_at.is_(None), EpcsCeremony.expires_at > clock.now())
        .order_by(EpcsCeremony.completed_at.desc()).limit(1)).scalar_one_or_none()


def _use(ceremony: EpcsCeremony) -> bool:
    """Consume the ceremony for one authorization response (atomic: a second use fails)."""
    return bool(db.session.execute(
        update(EpcsCeremony).where(EpcsCeremony.id == ceremony.id,
                                   EpcsCeremony.used_at.is_(None))
        .values(used_at=clock.now()).execution_options(synchronize_session=False)).rowcount)


def open_ceremony(ceremony_id: str, sso: SsoSession | None) -> EpcsCeremony | None:
    """The ceremony this browser's user may continue now (not finished, not expired)."""
    if sso is None or not ceremony_id or len(ceremony_id) > 64:
        return None
    item = db.session.get(EpcsCeremony, ceremony_id)
    if item is None or item.user_id != sso.user_id or item.completed_at is not None or \
            item.expires_at <= clock.now():
        return None
    return item


def begin_second_factor(ceremony: EpcsCeremony, user: User) -> LoginAttempt:
    """The password was right: wait for the hardware factor (the MFA challenge pages)."""
    attempt = flow.begin(user, ceremony.next_url, purpose="epcs", target_acr=epcs_acr())
    attempt.amr = ["pwd"]
    ceremony.attempt_id = attempt.id
    return attempt


def ceremony_for_attempt(attempt_id: str) -> EpcsCeremony | None:
    return db.session.execute(select(EpcsCeremony).where(
        EpcsCeremony.attempt_id == attempt_id)).scalar_one_or_none()


def complete(attempt: LoginAttempt, user: User, kind: str | None, amr: list[str],
             factor: Factor | None = None) -> bool:
    """Called when the ceremony's login attempt finishes (idp.epcs.purpose), with the kind of
    second factor used and its row: apply the policy's rule to the factors used at this
    ceremony and record the outcome (audited with the reference). A WebAuthn credential that
    is not an EPCS key (idp.epcs.keys) counts for nothing here, whatever the page offered."""
    ceremony = ceremony_for_attempt(attempt.id)
    if ceremony is None or ceremony.completed_at is not None:
        return False
    if kind == keys.webauthn.KIND and (factor is None or not keys.eligible([factor])):
        kind = None
    kinds = factor_kinds(amr, kind)
    met = policy().epcs.satisfied_by(kinds)
    ceremony.completed_at = clock.now()
    ceremony.amr = list(amr)
    ceremony.acr = epcs_acr() if met else None
    audit.record("epcs.ceremony_completed" if met else "epcs.ceremony_failed",
                 user_id=user.id, client_id=ceremony.client_id,
                 binding_message=ceremony.binding_message, ceremony=ceremony.id,
                 acr=ceremony.acr, amr=list(amr), factors=kinds,
                 details_sha256=ceremony.details_sha256)
    if met:
        for entry, digest in zip(ceremony.authorization_details or [],
                                 rx.entry_hashes(ceremony.authorization_details or []),
                                 strict=True):
            audit.record("epcs.signed", user_id=user.id, client_id=ceremony.client_id,
                         ceremony=ceremony.id, prescription_id=entry["prescription_id"],
                         sha256=digest, details_sha256=ceremony.details_sha256)
    return met


# -- the tokens of a signing ---------------------------------------------------------------
CEREMONY_VALUE = "epcs_ceremony"


def bind_code(oauth_request: object, family_id: str, user: User,
              values: dict | None = None) -> None:
    """idp.oidc.registry code binder: the ceremony that served this code names its grant
    family, so the family's access tokens carry what was signed."""
    ceremony_id = (values or {}).get(CEREMONY_VALUE)
    if ceremony_id:
        db.session.execute(update(EpcsCeremony).where(EpcsCeremony.id == ceremony_id)
                           .values(family_id=family_id)
                           .execution_options(synchronize_session=False))


def signed_for(family_id: str | None, acr: str | None) -> EpcsCeremony | None:
    """The ceremony with prescriptions whose code started this grant family. Only a grant
    at the EPCS acr can have one: every other token is issued without a query here (the
    token endpoint's statement budget, tests/integration/test_sql_budget.py)."""
    if not family_id or acr != epcs_acr():
        return None
    # token_claims and token_response both ask within one token response: one read.
    found: dict[str, EpcsCeremony | None] = g.setdefault("epcs_signed_for", {})
    if family_id not in found:
        found[family_id] = db.session.execute(select(EpcsCeremony).where(
            EpcsCeremony.family_id == family_id,
            EpcsCeremony.details_sha256.is_not(None)).limit(1)).scalar_one_or_none()
    return found[family_id]


def signature_claims(ceremony: EpcsCeremony | None) -> dict:
    """`authorization_details` (as signed) and `epcs_signature` (their hashes, see
    idp.epcs.details) for the access token and the token response."""
    if ceremony is None or ceremony.authorization_details is None:
        return {}
    signed = ceremony.authorization_details
    return {"authorization_details": signed,
            "epcs_signature": {
                "sha256": ceremony.details_sha256, "canonicalization": "RFC8785",
                "prescriptions": dict(zip([e["prescription_id"] for e in signed],
                                          rx.entry_hashes(signed), strict=True)),
                "ceremony": ceremony.id,
                "signed_at": int(ceremony.completed_at.timestamp())
                if ceremony.completed_at else None}}

