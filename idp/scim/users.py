"""SCIM Users over the accounts table: rendering an account as a SCIM resource, and applying a
validated resource (create, replace, patch) to it. Routes call these; the caller commits.

An account is rendered from its columns (userName, names, the email, active, the clinician's
credentials, role and facility) and, for the rest of what a connector sent, from the stored
document (scim_profiles.document). Writes go through one path: a PATCH is applied by
scim2-models to the current resource and the result is written like a PUT."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from flask import url_for
from pydantic import ValidationError
from scim2_models import Context, PatchOp, SCIMException
from sqlalchemy import func, select
from sqlalchemy.sql import column, table

from idp import clock
from idp.accounts import licenses, passwords
from idp.accounts.models import User
from idp.accounts.npi import is_valid_npi
from idp.context import policy
from idp.extensions import db
from idp.scim import groups as scim_groups
from idp.scim import lifecycle
from idp.scim.errors import ScimError
from idp.scim.models import ScimProfile
from idp.scim.schema import CLINICIAN, CORE_USER, ENTERPRISE, ScimUser

USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._@+-]{2,63}")  # a UPN or an email address too
_COLUMN_ATTRS = {"id", "meta", "schemas", "userName", "active", "password", "groups"}
_FACILITIES = table("facilities", column("name"), column("active"))  # idp.onboarding's


def facilities() -> list[str]:
    return list(db.session.execute(select(_FACILITIES.c.name).where(
        _FACILITIES.c.active.is_(True)).order_by(_FACILITIES.c.name)).scalars())


# -- rendering ---------------------------------------------------------------------------------
def profile_of(user: User) -> ScimProfile | None:
    return db.session.get(ScimProfile, user.id)


def location(user: User) -> str:
    return url_for("scim.user", user_id=user.subject, _external=True)


def version(resource: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in resource.items() if k != "meta"}, sort_keys=True,
                      default=str)
    return f'W/"{hashlib.sha256(body.encode()).hexdigest()[:20]}"'


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def render(user: User, profile: ScimProfile | None) -> dict[str, Any]:
    doc: dict[str, Any] = dict(profile.document) if profile is not None else {}
    res: dict[str, Any] = {k: v for k, v in doc.items()
                           if k not in (ENTERPRISE, CLINICIAN) and k not in _COLUMN_ATTRS}
    res["id"] = user.subject
    sent_name = doc.get("userName")
    res["userName"] = sent_name if isinstance(sent_name, str) and \
        sent_name.lower() == user.username else user.username
    name = {k: v for k, v in dict(doc.get("name") or {}).items()
            if k not in ("givenName", "familyName")}
    if user.given_name:
        name["givenName"] = user.given_name
    if user.family_name:
        name["familyName"] = user.family_name
    if name:
        res["name"] = name
    if "displayName" not in res and user.name:
        res["displayName"] = user.name
    if profile is None or "active" in doc or user.disabled:  # PATCH remove active: unset
        res["active"] = not user.disabled
    emails = [dict(e) for e in doc.get("emails") or []]
    if user.email:
        main = next((e for e in emails if e.get("primary")), None) or \
            next((e for e in emails if e.get("type") == "work"), None) or \
            (emails[0] if emails else None)
        if main is None:
            emails.insert(0, {"value": user.email, "type": "work", "primary": True})
        else:
            main["value"] = user.email
        res["emails"] = emails
    if profile is not None and profile.external_id:
        res["externalId"] = profile.external_id
    groups = [{"value": g.id, "display": g.display_name, "type": "direct",
               "$ref": url_for("scim.group", group_id=g.id, _external=True)}
              for g in scim_groups.of_user(user)]
    if groups:
        res["groups"] = groups
    enterprise = dict(doc.get(ENTERPRISE) or {})
    enterprise.pop("employeeNumber", None)
    enterprise.pop("department", None)
    if profile is not None and profile.employee_number:
        enterprise["employeeNumber"] = profile.employee_number
    if user.department:
        enterprise["department"] = user.department
    clinician = _clinician(user, profile, dict(doc.get(CLINICIAN) or {}))
    res["schemas"] = [CORE_USER] + ([ENTERPRISE] if enterprise else []) + \
        ([CLINICIAN] if clinician else [])
    if enterprise:
        res[ENTERPRISE] = enterprise
    if clinician:
        res[CLINICIAN] = clinician
    updated = profile.updated_at if profile is not None else user.created_at
    res["meta"] = {"resourceType": "User", "created": _iso(user.created_at),
                   "lastModified": _iso(updated), "location": location(user)}
    res["meta"]["version"] = version(res)
    return res


def _clinician(user: User, profile: ScimProfile | None, sent: dict[str, Any]
               ) -> dict[str, Any]:
    """The clinician extension. `role` is the role asked for: a clinical role held back
    until the credentials are complete is still the one shown, so a connector that writes
    back what it read does not cancel the request. An account provisioned without a role
    (it holds scim.toml default_role) shows none. epcsEligible is `returned: request`."""
    out: dict[str, Any] = {}
    requested = profile.requested_role if profile is not None else None
    if requested or "role" in sent or profile is None or \
            user.role != policy().scim.default_role:
        out["role"] = requested or user.role
    if user.npi:
        out["npi"] = user.npi
    stored = sent.get("licenses")
    if stored:
        out["licenses"] = stored
    elif user.license_number:
        lic: dict[str, Any] = {"state": user.license_state, "number": user.license_number}
        if user.license_expires:
            lic["expires"] = user.license_expires.isoformat()
        out["licenses"] = [lic]
    if user.facility:
        out["facility"] = user.facility
    return out


def epcs_eligible(user: User) -> bool:
    """May be proposed for EPCS: a clinical role, a valid NPI, an unexpired license."""
    role = policy().roles.get(user.role)
    return bool(role and role.clinical and not user.clinical_suspended and user.npi
                and user.license_expires and user.license_expires > clock.now().date())


# -- lookups -----------------------------------------------------------------------------------
def find(subject: str) -> tuple[User, ScimProfile | None]:
    """The account with this SCIM id, not soft-deleted; 404 otherwise."""
    user = db.session.execute(select(User).where(User.subject == subject[:64])) \
        .scalar_one_or_none() if subject else None
    profile = profile_of(user) if user is not None else None
    if user is None or (profile is not None and profile.deleted_at is not None):
        raise ScimError(404, f"no User with id {subject[:64]!r}")
    return user, profile


# -- validation --------------------------------------------------------------------------------
def validate(body: Any, ctx: Context) -> Any:
    if not isinstance(body, dict):
        raise ScimError(400, "the body must be a JSON object", "invalidSyntax")
    try:
        return ScimUser.model_validate(body, scim_ctx=ctx)
    except ValidationError as exc:
        raise ScimError.from_validation(exc) from None
    except SCIMException as exc:
        raise ScimError(400, str(exc)[:300], "invalidValue") from None


def patched(current: dict[str, Any], body: Any) -> Any:
    """The resource after a PATCH request's operations (scim2-models applies them)."""
    if not isinstance(body, dict):
        raise ScimError(400, "the body must be a JSON object", "invalidSyntax")
    try:
        patch = PatchOp[ScimUser].model_validate(  # type: ignore[index]
            body, scim_ctx=Context.RESOURCE_PATCH_REQUEST)
        model = ScimUser.model_validate(
            {k: v for k, v in current.items() if k != "meta"},
            scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
        patch.patch(model)
        # Re-validated as a replacement: what the operations produced meets the same rules.
        return ScimUser.model_validate(model.model_dump(scim_ctx=Context.DEFAULT),
                                       scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    except ValidationError as exc:
        raise ScimError.from_validation(exc) from None
    except SCIMException as exc:
        status = int(getattr(exc, "status", 400) or 400)
        raise ScimError(status if 400 <= status < 500 else 400, str(exc)[:300],
                        getattr(exc, "scim_type", None) or "invalidValue") from None


@dataclass
class Wanted:
    """What a validated resource asks of the account."""

    username: str
    sent_username: str
    given_name: str
    family_name: str
    email: str
    active: bool
    password: str | None
    external_id: str | None
    employee_number: str | None
    department: str | None
    npi: str | None
    licenses: list[dict[str, Any]]
    facility: str | None
    role: str | None
    document: dict[str, Any]


def wanted(model: Any) -> Wanted:
    dump = model.model_dump(scim_ctx=Context.DEFAULT, mode="json")
    password = model.password
    sent = str(model.user_name or "").strip()
    username = sent.lower()
    if not USERNAME_RE.fullmatch(username):
        raise ScimError.invalid_value(
            "userName: 3-64 characters, letters, digits, '.', '_', '-', '+' or '@'")
    name = model.name
    given = (name.given_name or "") if name else ""
    family = (name.family_name or "") if name else ""
    if len(given) > 100 or len(family) > 100:
        raise ScimError.invalid_value("name.givenName and name.familyName: 100 characters")
    emails = model.emails or []
    main = next((e for e in emails if e.primary), None) or \
        next((e for e in emails if str(e.type or "") == "work"), None) or \
        (emails[0] if emails else None)
    email = str(main.value) if main is not None and main.value else ""
    if len(email) > 254:
        raise ScimError.invalid_value("emails: 254 characters at most")
    enterprise = dump.get(ENTERPRISE) or {}
    clinician = dump.get(CLINICIAN) or {}
    npi = clinician.get("npi")
    if npi is not None:
        npi = str(npi).strip()
        if not is_valid_npi(npi):
            raise ScimError.invalid_value(
                "npi: not a valid NPI (10 digits whose last is the check digit)")
    # A license is one state's number: sent twice (a PATCH add of a renewed license), the
    # later entry replaces the earlier.
    by_identity: dict[tuple[str, str], dict[str, Any]] = {}
    states = policy().onboarding.license_states
    for i, lic in enumerate(clinician.get("licenses") or []):
        expires = lic.get("expires")
        when = date.fromisoformat(expires) if expires else None
        problems = licenses.problems(states, lic.get("state") or "", lic.get("number") or "",
                                     when, clock.now().date())
        if problems:
            raise ScimError.invalid_value(f"licenses[{i}]: " + " ".join(problems.values()))
        if len(licenses.normalize_number(lic.get("number") or "")) > 32:
            raise ScimError.invalid_value(f"licenses[{i}].number: 32 characters at most")
        state = str(lic["state"]).strip().upper()
        number = licenses.normalize_number(lic["number"])
        by_identity[(state, number)] = {"state": state, "number": number,
                                        "expires": when.isoformat() if when else None}
    found_licenses = list(by_identity.values())
    role = clinician.get("role")
    if role is not None and role not in policy().roles:
        raise ScimError.invalid_value(
            f"role: one of {', '.join(sorted(policy().roles))} (see /Schemas)")
    facility = clinician.get("facility")
    if facility is not None and facility not in facilities():
        raise ScimError.invalid_value("facility: one of the canonicalValues in /Schemas")
    department = enterprise.get("department")
    employee_number = enterprise.get("employeeNumber")
    if (department and len(department) > 200) or (employee_number and len(employee_number) > 64):
        raise ScimError.invalid_value("department: 200 characters, employeeNumber: 64")
    external_id = dump.get("externalId")
    if external_id is not None and len(external_id) > 255:
        raise ScimError.invalid_value("externalId: 255 characters at most")
    document = {k: v for k, v in dump.items() if k not in _COLUMN_ATTRS or k == "userName"}
    document.pop("externalId", None)
    if model.active is not None:
        document["active"] = True  # only that it was sent: the column holds the value
    if CLINICIAN in document:  # the columns hold the rest; what was sent is remembered
        document[CLINICIAN] = {k: v for k, v in (("licenses", found_licenses),
                                                  ("role", role)) if v}
    return Wanted(username, sent, given, family, email,
                  model.active is not False, password, external_id, employee_number,
                  department, npi, found_licenses, facility, role, document)


# -- writes ------------------------------------------------------------------------------------
def _check_unique(want: Wanted, user: User | None) -> None:
    me = user.id if user is not None else -1
    if db.session.execute(select(User.id).where(
            func.lower(User.username) == want.username, User.id != me)).first():
        raise ScimError(409, f"userName {want.sent_username!r} is taken", "uniqueness")
    if want.npi and db.session.execute(select(User.id).where(
            User.npi == want.npi, User.id != me)).first():
        raise ScimError(409, "this NPI belongs to another account", "uniqueness")


def _check_password(want: Wanted, user: User) -> None:
    if want.password is None:
        return
    if not policy().scim.allow_password:
        raise ScimError.invalid_value("password: not accepted over SCIM here (policy); the "
                                      "account holder chooses one from the welcome mail")
    found = passwords.problems(want.password, user, check_history=False)
    if found:
        raise ScimError.invalid_value("password: " + " ".join(found))


def create(model: Any, token_name: str) -> tuple[User, ScimProfile]:
    want = wanted(model)
    _check_unique(want, None)
    now = clock.now()
    user = User(username=want.username, email=want.email, role=policy().scim.default_role,
                given_name=want.given_name, family_name=want.family_name, npi=want.npi,
                department=want.department, facility=want.facility,
                disabled=not want.active, created_at=now)
    _mirror_license(user, want)
    _check_password(want, user)
    db.session.add(user)
    db.session.flush()
    profile = ScimProfile(user_id=user.id, external_id=want.external_id,
                          employee_number=want.employee_number, document=want.document,
                          created_by=token_name, created_at=now, updated_at=now)
    db.session.add(profile)
    if want.password is not None:
        passwords.set_password(user, want.password)
    lifecycle.joined(user, profile, want.role, token_name,
                     welcome=want.password is None and want.active and bool(want.email))
    return user, profile


def replace(user: User, profile: ScimProfile | None, model: Any, token_name: str
            ) -> ScimProfile:
    want = wanted(model)
    _check_unique(want, user)
    _check_password(want, user)
    now = clock.now()
    if profile is None:
        profile = ScimProfile(user_id=user.id, document={}, created_at=now, updated_at=now)
        db.session.add(profile)
    was_active = not user.disabled
    sent_before = dict((profile.document or {}).get(CLINICIAN) or {})
    changed_email = want.email != user.email
    user.username = want.username
    user.given_name, user.family_name = want.given_name, want.family_name
    user.email = want.email
    if changed_email:
        user.email_verified = False
    user.department = want.department
    user.facility = want.facility
    if want.npi != user.npi:
        user.npi = want.npi
    _mirror_license(user, want)
    profile.external_id = want.external_id
    profile.employee_number = want.employee_number
    profile.document = want.document
    profile.updated_at = now
    if want.password is not None:
        passwords.set_password(user, want.password)
        lifecycle.password_set(user, token_name)
    target = _target_role(want, profile, sent_before)
    if target is not None:
        lifecycle.role_wanted(user, profile, target, token_name)
    if was_active and not want.active:
        lifecycle.terminate(user, profile, token_name, reason="deactivated")
    elif not was_active and want.active:
        lifecycle.reactivate(user, profile, token_name)
    lifecycle.updated(user, token_name)
    return profile


def _target_role(want: Wanted, profile: ScimProfile, sent_before: dict[str, Any]
                 ) -> str | None:
    """The role asked for: the one sent; scim.toml default_role when a role sent earlier was
    removed; else the one waiting for credentials (re-checked now); None: the role stays."""
    if want.role is not None:
        return want.role
    if "role" in sent_before:
        return policy().scim.default_role
    return profile.requested_role


def _mirror_license(user: User, want: Wanted) -> None:
    """The first license in the account's columns (the daily license check reads them)."""
    first = want.licenses[0] if want.licenses else None
    user.license_state = first["state"] if first else None
    user.license_number = first["number"] if first else None
    user.license_expires = date.fromisoformat(first["expires"]) \
        if first and first["expires"] else None


def delete(user: User, profile: ScimProfile | None, token_name: str) -> None:
    """Soft delete: the account stays (disabled) so the audit trail keeps its subject."""
    now = clock.now()
    if profile is None:
        profile = ScimProfile(user_id=user.id, document={}, created_at=now, updated_at=now)
        db.session.add(profile)
    if not user.disabled:
        lifecycle.terminate(user, profile, token_name, reason="deleted")
    profile.deleted_at = now
    profile.updated_at = now
    lifecycle.deleted(user, token_name)
