"""Onboarding logic: applications, email verification, the review queue and its decisions,
facilities, and the daily license check. No Flask request objects here: views, the CLI and
tests call these functions; the caller commits, then sends the emails returned.

Links mailed to applicants are random 256-bit tokens stored only as SHA-256, single use,
claimed with one UPDATE (of two concurrent uses exactly one wins), as password reset links."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.accounts import licenses, reset
from idp.accounts.models import User
from idp.accounts.npi import is_valid_npi
from idp.accounts.service import USERNAME_RE, AccountError, create_user
from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.context import policy, settings
from idp.core import events as domain_events
from idp.core.crypto import digest
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db
from idp.oidc.home import home_url
from idp.onboarding import registry
from idp.onboarding.models import (
    OPEN_STATES,
    Application,
    ApplicationLink,
    Department,
    Facility,
)
from idp.policy import OnboardingPolicy, Role

CONCURRENT_DECISION = ("Another decision was saved at the same moment (this NPI or username is "
                       "now on an account): reload the application.")

MAX_TOKEN_LENGTH = 128
NPI_TAKEN = _l("This NPI cannot be used for a new application: it already belongs to an "
                "account or to an application under review. If you think this is a mistake, "
                "contact the credentialing office.")


class OnboardingError(ValueError):
    """A decision or change that cannot be made; the message says why, in words for people."""


def rules() -> OnboardingPolicy:
    found = policy().onboarding
    assert found is not None, "policies/onboarding.toml was not loaded"
    return found


def applicable_roles() -> list[Role]:
    return [r for r in policy().roles.values() if r.applicable]


def active_facilities() -> list[Facility]:
    return list(db.session.execute(select(Facility).where(Facility.active.is_(True))
                                   .order_by(Facility.name)).scalars())


def all_facilities() -> list[Facility]:
    return list(db.session.execute(select(Facility).order_by(Facility.name)).scalars())


# -- the application ---------------------------------------------------------------------------
@dataclass
class ApplicationInput:
    given_name: str
    family_name: str
    email: str
    phone: str
    role: str
    npi: str
    facility_id: int | None
    department_id: int | None
    license_state: str = ""
    license_number: str = ""
    license_expires: date | None = None
    errors: dict[str, str] = field(default_factory=dict)


def npi_taken(npi: str) -> bool:
    """On an enabled account, on an application in the queue, or on an application whose
    email link is still being waited for (held `pending_hold` seconds)."""
    held_since = clock.now() - timedelta(seconds=rules().pending_hold)
    on_account = select(User.id).where(User.npi == npi, User.disabled.is_(False))
    on_application = select(Application.id).where(Application.npi == npi, or_(
        Application.status.in_(OPEN_STATES),
        (Application.status == "email_pending") & (Application.created_at > held_since)))
    return db.session.execute(on_account.union_all(on_application).limit(1)).first() is not None


def validate(data: ApplicationInput) -> dict[str, str]:
    """A readable message per field (empty: the application may be submitted)."""
    errors: dict[str, str] = {}
    roles = {r.name: r for r in applicable_roles()}
    role = roles.get(data.role)
    if role is None:
        errors["role"] = _("Choose the role you are applying for.")
    npi = (data.npi or "").strip()
    if not re.fullmatch(r"[0-9]{10}", npi):
        errors["npi"] = _("An NPI is exactly 10 digits.")
    elif not is_valid_npi(npi):
        errors["npi"] = _("This is not a valid NPI: its last digit (the check digit) does "
                           "not match. Check for a mistyped digit.")
    elif npi_taken(npi):
        errors["npi"] = NPI_TAKEN
    facility = db.session.get(Facility, data.facility_id) if data.facility_id else None
    if facility is None or not facility.active:
        errors["facility_id"] = _("Choose the facility where you will work.")
    if data.department_id is not None:
        department = db.session.get(Department, data.department_id)
        if department is None or facility is None or department.facility_id != facility.id:
            errors["department_id"] = _("Choose a department of the facility you chose.")
    clinical = role is not None and role.clinical
    if clinical or data.license_state or data.license_number or data.license_expires:
        errors.update(licenses.problems(rules().license_states, data.license_state,
                                        data.license_number, data.license_expires,
                                        clock.now().date()))
    return errors


def submit(data: ApplicationInput) -> tuple[Application, str]:
    """Store a valid application (not yet in the queue) and the link that confirms its email.
    Returns the application and the link to mail."""
    clinical_or_license = bool(data.license_state or data.license_number)
    item = Application(
        status="email_pending", given_name=data.given_name.strip(),
        family_name=data.family_name.strip(), email=data.email.strip(),
        phone=data.phone.strip(), role=data.role, npi=data.npi.strip(),
        license_state=data.license_state.strip().upper() or None if clinical_or_license
        else None,
        license_number=licenses.normalize_number(data.license_number) or None,
        license_expires=data.license_expires, facility_id=data.facility_id,
        department_id=data.department_id, created_at=clock.now())
    db.session.add(item)
    db.session.flush()
    url = _issue_link(item, "verify", rules().email_link_lifetime)
    audit.record("onboarding.applied", actor="applicant", application=item.id, role=item.role,
                 facility=item.facility_id)
    return item, url


def _issue_link(item: Application, purpose: str, lifetime: int) -> str:
    token = secrets.token_urlsafe(32)
    now = clock.now()
    db.session.execute(update(ApplicationLink).where(
        ApplicationLink.application_id == item.id, ApplicationLink.purpose == purpose,
        ApplicationLink.used_at.is_(None)).values(used_at=now)
        .execution_options(synchronize_session=False))  # an older link stops working
    db.session.add(ApplicationLink(application_id=item.id, purpose=purpose,
                                   token_hash=digest(token),
                                   expires_at=now + timedelta(seconds=lifetime)))
    return f"{settings().issuer}/onboarding/{purpose}/{token}"


def valid_link(token: str, purpose: str) -> tuple[ApplicationLink, Application] | None:
    """The unused, unexpired link and its application, or None."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    link = db.session.execute(select(ApplicationLink).where(
        ApplicationLink.token_hash == digest(token), ApplicationLink.purpose == purpose)
    ).scalar_one_or_none()
    if link is None or link.used_at is not None or link.expires_at <= clock.now():
        return None
    return link, db.session.get(Application, link.application_id)


def _claim(link: ApplicationLink) -> bool:
    now = clock.now()
    return db.session.execute(update(ApplicationLink).where(
        ApplicationLink.id == link.id, ApplicationLink.used_at.is_(None),
        ApplicationLink.expires_at > now).values(used_at=now)
        .execution_options(synchronize_session=False)).rowcount == 1


def verify_email(token: str) -> Application | None:
    """Follow the emailed link: the application enters the review queue and the provider
    registry is asked about the NPI (the answer is kept for the reviewer). None: the link
    is unknown, used or expired."""
    found = valid_link(token, "verify")
    if found is None or found[1].status != "email_pending" or not _claim(found[0]):
        return None
    return enter_queue(found[1])


def enter_queue(item: Application, vouched_by: str | None = None) -> Application:
    """The email is confirmed (by its link, or by the source that pre-filled the application
    and verified the address: idp.core.applicants): into the review queue, the registry asked."""
    item.status = "pending"
    item.submitted_at = clock.now()
    item.registry_result = registry_check(item)
    audit.record("onboarding.email_verified", actor="applicant", application=item.id,
                 vouched_by=vouched_by)
    return item


def recheck_registry(item: Application, verifier: User) -> Application:
    """Ask the registry again (it was unavailable, or the file was updated)."""
    if item.status == "email_pending":
        raise OnboardingError("The applicant has not confirmed their email address yet.")
    item.registry_result = registry_check(item)
    audit.record("onboarding.registry_checked", actor=f"admin:{verifier.id}",
                 application=item.id, available=bool(item.registry_result.get("available")))
    return item


def registry_check(item: Application) -> dict:
    adapter = registry.configured(settings().npi_registry, rules().registry_timeout,
                                  rules().nppes_url)
    if adapter is None:
        return {"source": "none", "available": False, "note": "no registry configured"}
    return adapter.lookup(item.npi, item.given_name, item.family_name).as_dict()


# -- the queue -------------------------------------------------------------------------------
def queue(status: str = "open", role: str = "", facility_id: int | None = None
          ) -> list[Application]:
    """Applications whose email is confirmed, oldest first, filtered."""
    query = select(Application).where(Application.status != "email_pending")
    if status == "open":
        query = query.where(Application.status.in_(OPEN_STATES))
    elif status:
        query = query.where(Application.status == status)
    if role:
        query = query.where(Application.role == role)
    if facility_id:
        query = query.where(Application.facility_id == facility_id)
    return list(db.session.execute(query.order_by(Application.submitted_at, Application.id)
                                   .limit(500)).scalars())


def open_count() -> int:
    """Confirmed applications waiting for a verifier or for the applicant (the dashboard)."""
    return int(db.session.execute(select(func.count()).select_from(Application).where(
        Application.status.in_(OPEN_STATES))).scalar_one())


def age(item: Application, now: datetime | None = None) -> timedelta:
    return (now or clock.now()) - (item.submitted_at or item.created_at)


def overdue(item: Application, now: datetime | None = None) -> bool:
    """An open application waiting longer than the SLA (policies/onboarding.toml)."""
    return item.status in OPEN_STATES and age(item, now).total_seconds() > rules().sla


def events(item: Application) -> list[AuditEvent]:
    """The application's audit trail (events carry its id in their detail)."""
    rows = db.session.execute(select(AuditEvent).where(
        AuditEvent.event.like("onboarding.%"), AuditEvent.at >= item.created_at)
        .order_by(AuditEvent.seq)).scalars()  # `at` is indexed: only events since it applied
    return [e for e in rows if (e.detail or {}).get("application") == item.id]


def reviewable(item: Application | None) -> Application:
    if item is None:
        raise OnboardingError("There is no such application.")
    if item.status == "email_pending":
        raise OnboardingError("The applicant has not confirmed their email address yet: the "
                              "application is not in the queue and cannot be decided.")
    if item.status not in OPEN_STATES:
        raise OnboardingError(f"This application was already {item.status}.")
    return item


@dataclass(frozen=True)
class Approval:
    user: User | None          # the new account, None while a second approval is awaited
    temporary_password: str | None = None
    awaiting_second: bool = False


def needs_two(role: str) -> bool:
    return rules().four_eyes and role in rules().four_eyes_roles


def approve(item: Application | None, verifier: User, role: str, facility_id: int | None,
            department_id: int | None) -> Approval:
    """Approve with the role and facility the verifier chose (they may differ from the ones
    asked for). Roles under four-eyes need a second, different verifier."""
    item = reviewable(item)
    roles = {r.name: r for r in applicable_roles()}
    if role not in roles:
        raise OnboardingError("Choose a role that can be granted through onboarding.")
    facility = db.session.get(Facility, facility_id) if facility_id else None
    if facility is None or not facility.active:
        raise OnboardingError("Choose an active facility.")
    department = db.session.get(Department, department_id) if department_id else None
    if department is not None and department.facility_id != facility.id:
        raise OnboardingError("The department must belong to the chosen facility.")
    if roles[role].clinical and not (item.license_state and item.license_number
                                     and item.license_expires):
        raise OnboardingError("A clinical role needs a license on the application.")
    if roles[role].clinical and item.license_expires <= clock.now().date():
        raise OnboardingError("The applicant's license has expired.")
    if npi_on_account(item.npi):
        raise OnboardingError(NPI_TAKEN)
    choice = {"role": role, "facility": facility.id,
              "department": department.id if department else None}
    if needs_two(role):
        if item.first_approval_by is None:
            item.first_approval_by = verifier.id
            item.first_approval = choice
            audit.record("onboarding.first_approval", actor=f"admin:{verifier.id}",
                         application=item.id, **choice)
            return Approval(None, awaiting_second=True)
        if item.first_approval_by == verifier.id:
            raise OnboardingError("This role needs a second approval by a different verifier.")
    try:
        user = create_user(username=_username(item), email=item.email, role=role, npi=item.npi,
                           given_name=item.given_name, family_name=item.family_name,
                           facility=facility.name, department=department.name if department
                           else None, license_state=item.license_state)
    except (AccountError, IntegrityError):  # a concurrent decision took the NPI or username
        raise OnboardingError(CONCURRENT_DECISION) from None
    user.email_verified = True
    user.phone_number = item.phone or None
    user.license_number = item.license_number
    user.license_expires = item.license_expires
    password = reset.set_temporary(user, actor=f"admin:{verifier.id}")
    item.status = "approved"
    item.user_id = user.id
    item.decided_at = clock.now()
    item.decided_by = verifier.id
    audit.record("onboarding.approved", actor=f"admin:{verifier.id}", user_id=user.id,
                 application=item.id, first_approval_by=item.first_approval_by, **choice)
    domain_events.emit(domain_events.ACCOUNT_APPROVED, user_id=user.id)
    domain_events.emit(domain_events.APPLICATION_APPROVED, application_id=item.id,
                       user_id=user.id)
    return Approval(user, password)


def npi_on_account(npi: str) -> bool:
    return db.session.execute(select(func.count()).select_from(User).where(User.npi == npi)
                              ).scalar_one() > 0


def _username(item: Application) -> str:
    """given.family in lower-case ASCII (accents dropped), numbered when taken."""
    def ascii_part(text: str) -> str:
        plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        return re.sub(r"[^a-z0-9]+", "-", plain.lower()).strip("-")

    base = ".".join(p for p in (ascii_part(item.given_name), ascii_part(item.family_name)) if p)
    base = (base or "provider")[:56]
    if len(base) < 3:
        base = f"{base}.provider"
    candidate, n = base, 1
    while db.session.execute(select(User.id).where(User.username == candidate)).first():
        n += 1
        candidate = f"{base}{n}"
    assert USERNAME_RE.fullmatch(candidate), candidate
    return candidate


def reject(item: Application | None, verifier: User, reason: str) -> Application:
    item = reviewable(item)
    reason = (reason or "").strip()
    if not reason:
        raise OnboardingError("Give the applicant a reason.")
    item.status = "rejected"
    item.reason = reason
    item.decided_at = clock.now()
    item.decided_by = verifier.id
    audit.record("onboarding.rejected", actor=f"admin:{verifier.id}", application=item.id)
    return item


def request_info(item: Application | None, verifier: User, question: str) -> str:
    """Ask the applicant for more; returns the reply link to mail."""
    item = reviewable(item)
    question = (question or "").strip()
    if not question:
        raise OnboardingError("Write what the applicant should send.")
    item.status = "info_requested"
    item.info_request = question
    url = _issue_link(item, "reply", rules().reply_link_lifetime)
    audit.record("onboarding.info_requested", actor=f"admin:{verifier.id}", application=item.id)
    return url


def answer(token: str, text: str) -> Application | None:
    """The applicant's reply through the emailed link; the application is back in the queue."""
    found = valid_link(token, "reply")
    if found is None or found[1].status != "info_requested" or not _claim(found[0]):
        return None
    item = found[1]
    item.applicant_reply = text.strip()
    item.status = "pending"
    audit.record("onboarding.applicant_replied", actor="applicant", application=item.id)
    return item


# -- emails ----------------------------------------------------------------------------------
def verify_mail(item: Application, url: str) -> tuple[str, str, str]:
    hours = rules().email_link_lifetime // 3600
    return (item.email, _("Confirm your email to complete your provider registration"),
            _("Hello %(name)s,\n\n"
              "Thank you for applying for access to the provider network. To send your "
              "application to our credentialing team, confirm your email address by opening "
              "this link within %(hours)s hours (it works once):\n\n%(url)s\n\n"
              "Our team reviews applications within 24 to 48 hours and will write to you at "
              "this address.\n\nIf you did not apply, ignore this message: nothing happens "
              "without the confirmation.\n\n— Provider Identity, credentialing team\n",
              name=item.name, hours=hours, url=url))


def approved_mail(user: User, password: str) -> tuple[str, str, str]:
    hours = policy().password.temporary_lifetime // 3600
    return (user.email, _("Your provider account is ready"),
            _("Hello %(name)s,\n\nYour application was approved. Your account:\n\n"
              "  Username: %(username)s\n  Temporary password: %(password)s\n\n"
              "Sign in within %(hours)s hours at:\n\n%(url)s\n\n"
              "At your first sign-in you will set up a second way to verify it's you (an "
              "authenticator app, for example) and choose your own password. The temporary "
              "password stops working after %(hours)s hours; after that, ask the helpdesk for "
              "a new one.\n\n— Provider Identity, credentialing team\n",
              name=user.name, username=user.username, password=password, hours=hours,
              url=home_url()))


def rejected_mail(item: Application) -> tuple[str, str, str]:
    return (item.email, _("Your provider registration"),
            _("Hello %(name)s,\n\nWe could not approve your application for access to the "
              "provider network.\n\nReason: %(reason)s\n\nYou may apply again once this is "
              "resolved. For questions, contact your facility's credentialing office.\n\n"
              "— Provider Identity, credentialing team\n", name=item.name, reason=item.reason))


def info_mail(item: Application, url: str) -> tuple[str, str, str]:
    days = rules().reply_link_lifetime // 86400
    return (item.email, _("More information needed for your provider registration"),
            _("Hello %(name)s,\n\nOur credentialing team needs more information to "
              "complete the review of your application:\n\n%(request)s\n\n"
              "Answer through this link within %(days)s days (it works once):\n\n%(url)s\n\n"
              "— Provider Identity, credentialing team\n", name=item.name,
              request=item.info_request, days=days, url=url))


# -- facilities ------------------------------------------------------------------------------
def _facility_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name or len(name) > 200:
        raise OnboardingError("A facility name is 1 to 200 characters.")
    return name


def create_facility(name: str, actor: str) -> Facility:
    name = _facility_name(name)
    if db.session.execute(select(Facility.id).where(Facility.name == name)).first():
        raise OnboardingError("A facility with this name exists already.")
    item = Facility(name=name, active=True, created_at=clock.now())
    db.session.add(item)
    db.session.flush()
    audit.record("admin.facility_created", actor=actor, facility=item.id, name=name)
    return item


def rename_facility(item: Facility | None, name: str, actor: str) -> Facility:
    if item is None:
        raise OnboardingError("There is no such facility.")
    name = _facility_name(name)
    if db.session.execute(select(Facility.id).where(Facility.name == name,
                                                    Facility.id != item.id)).first():
        raise OnboardingError("A facility with this name exists already.")
    old, item.name = item.name, name
    audit.record("admin.facility_renamed", actor=actor, facility=item.id, old=old, name=name)
    return item


def set_facility_active(item: Facility | None, active: bool, actor: str) -> Facility:
    if item is None:
        raise OnboardingError("There is no such facility.")
    item.active = active
    audit.record("admin.facility_" + ("activated" if active else "deactivated"), actor=actor,
                 facility=item.id)
    return item


def add_department(item: Facility | None, name: str, actor: str) -> Department:
    if item is None:
        raise OnboardingError("There is no such facility.")
    name = " ".join((name or "").split())
    if not name or len(name) > 200:
        raise OnboardingError("A department name is 1 to 200 characters.")
    if any(d.name == name for d in item.departments):
        raise OnboardingError("This facility has a department of that name already.")
    department = Department(facility_id=item.id, name=name)
    db.session.add(department)
    db.session.flush()
    audit.record("admin.department_added", actor=actor, facility=item.id,
                 department=department.id, name=name)
    return department


# -- license expiry --------------------------------------------------------------------------
@dataclass
class LicenseRun:
    warned: list[User] = field(default_factory=list)
    suspended: list[User] = field(default_factory=list)


def check_licenses(today: date | None = None) -> LicenseRun:
    """Warn holders of a clinical role whose license runs out within the warning window (once),
    and suspend the clinical role of those whose license has run out (tokens stop carrying
    it: see idp/oidc/claims.py). The caller commits, then mails the warnings."""
    today = today or clock.now().date()
    clinical = [r.name for r in policy().roles.values() if r.clinical]
    horizon = today + timedelta(days=rules().license_warning_days)
    run = LicenseRun()
    candidates = db.session.execute(select(User).where(
        User.role.in_(clinical), User.license_expires.is_not(None),
        User.license_expires <= horizon, User.clinical_suspended.is_(False))
        .order_by(User.id)).scalars().all()
    for user in candidates:
        if user.license_expires <= today:
            user.clinical_suspended = True
            audit.record("onboarding.clinical_role_suspended", actor="cli:check-licenses",
                         user_id=user.id, license_expires=user.license_expires.isoformat())
            run.suspended.append(user)
        elif user.license_warned_at is None:
            user.license_warned_at = clock.now()
            audit.record("onboarding.license_expiry_warned", actor="cli:check-licenses",
                         user_id=user.id, license_expires=user.license_expires.isoformat())
            run.warned.append(user)
    return run


def warning_mail(user: User) -> tuple[str, str, str]:
    return (user.email, _("Your license on file expires soon"),
            _("Hello %(name)s,\n\nThe %(state)s license on file for your account expires on "
              "%(date)s. When it expires, your clinical access is suspended until the "
              "credentialing office records your renewed license.\n\nSend your renewal to "
              "your facility's credentialing office before that date.\n\n"
              "— Provider Identity\n", name=user.name or user.username,
              state=user.license_state, date=f"{user.license_expires:%Y-%m-%d}"))


def suspended_mail(user: User) -> tuple[str, str, str]:
    return (user.email, _("Your clinical access is suspended"),
            _("Hello %(name)s,\n\nThe license on file for your account expired on %(date)s, "
              "so your clinical access is suspended. Send your renewed license to your "
              "facility's credentialing office to restore it.\n\n— Provider Identity\n",
              name=user.name or user.username, date=f"{user.license_expires:%Y-%m-%d}"))


def normalise_phone(raw: str) -> tuple[str | None, str | None]:
    """(E.164 number, None) or (None, a message): any valid number, landlines included."""
    import phonenumbers

    try:
        number = phonenumbers.parse((raw or "").strip()[:40], "US")
    except phonenumbers.NumberParseException:
        return None, _("Enter a phone number such as (650) 253-0000 or +1 650 253 0000.")
    if not phonenumbers.is_valid_number(number):
        return None, _("This is not a valid phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def renew_license(user: User, expires: date, number: str | None, actor: str) -> User:
    """Record a renewed license: a future expiry lifts the clinical suspension and re-arms the
    expiry warning."""
    if expires <= clock.now().date():
        raise OnboardingError("The new expiry date must be in the future.")
    if number is not None:
        state = rules().license_states.get(user.license_state or "")
        found = licenses.problems(rules().license_states, user.license_state or "", number,
                                  expires, clock.now().date()) if state else {}
        if found:
            raise OnboardingError(" ".join(found.values()))
        user.license_number = licenses.normalize_number(number)
    user.license_expires = expires
    user.license_warned_at = None
    lifted = user.clinical_suspended
    user.clinical_suspended = False
    audit.record("onboarding.license_renewed", actor=actor, user_id=user.id,
                 license_expires=expires.isoformat(), suspension_lifted=lifted)
    return user
