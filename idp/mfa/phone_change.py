"""Change the account's phone number, re-verified by a code sent to the NEW number.

The codes are those of idp.mfa.factors.otp_code: random, stored hashed, single use, bound to one
LoginAttempt, living `code_lifetime` seconds with `code_attempts` guesses each, and the resend
cool-down and cap of policies/mfa.toml (counted per account, shared with sign-in codes).

Why a pending factor: codes.send() stores `OneTimeCode.factor_id`, a foreign key to
mfa_factors, so a transient, unsaved Factor cannot carry a code. The code rows therefore hang
off a pending, UNCONFIRMED `Factor(kind="sms", label="Phone verification")` whose destination
is the number being verified. An unconfirmed factor is never a sign-in method: flow.factors()
(the challenge, step-up and "needs enrollment" checks), manage.owned() and the WebAuthn look-ups
only take confirmed ones, and /mfa/enroll/<kind> confirms only the factor id its own session
cookie names; nothing here ever sets `confirmed_at`. An account has at most one such factor:
a new number reuses it (its earlier codes are voided, so a code sent to an earlier number
cannot confirm a later one, yet they still count toward the resend cap). It is deleted, with
its codes, once the change is confirmed, or once it has expired: when no code was sent for it
within the resend window, so deleting it never resets the cap.

Codes are bound to a short-lived LoginAttempt(purpose="phone") whose id the browser holds (as
mfa.enrollment.attempt_for() does for enrollment from settings); that attempt is never the
sign-in attempt flow.current() reads, so it cannot finish a sign-in.

Plain functions over the ORM, no request objects: the caller commits (or, when a code could
not be sent, rolls back), then sends email.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.core.i18n import speaking
from idp.extensions import db
from idp.mfa.factors import otp_code as codes
from idp.mfa.models import Factor, LoginAttempt, OneTimeCode
from idp.notify.mailer import send_mail

PENDING_LABEL = "Phone verification"
PURPOSE = "phone"
SAME_NUMBER = _l("This is already your phone number.")
NO_PENDING = _l("Enter your new phone number first; we will text a code to it.")
EXPIRED = _l("That code has expired or was tried too many times. Send a new code.")
WRONG = _l("That code is not right. Check the text message and try again.")


class PhoneChangeError(ValueError):
    """The number cannot be used; the message says why, in plain words."""


@dataclass(frozen=True)
class Sent:
    sent: bool
    message: str
    masked: str


@dataclass(frozen=True)
class Confirmed:
    ok: bool
    error: str | None = None
    masked: str | None = None


# -- the pending verification --------------------------------------------------------------
def _pending_rows(user: User) -> list[Factor]:
    return list(db.session.execute(select(Factor).where(
        Factor.user_id == user.id, Factor.kind == "sms", Factor.label == PENDING_LABEL,
        Factor.confirmed_at.is_(None)).order_by(Factor.id.desc())).scalars())


def pending(user: User) -> Factor | None:
    """The account's pending phone verification (newest, should a double submit make two)."""
    rows = _pending_rows(user)
    return rows[0] if rows else None


def _discard(factor: Factor) -> None:
    # Explicitly: SQLite does not enforce the ON DELETE CASCADE of mfa_codes.factor_id.
    db.session.execute(delete(OneTimeCode).where(OneTimeCode.factor_id == factor.id)
                       .execution_options(synchronize_session=False))
    db.session.delete(factor)


def expire_stale(user: User) -> int:
    """Delete pending verifications with no code sent within the resend window: every code of
    theirs has expired, and none of them counts toward the resend cap any more."""
    window = clock.now() - timedelta(seconds=policy().mfa.resend_window)
    removed = 0
    for factor in _pending_rows(user):
        last = clock.aware(db.session.execute(select(func.max(OneTimeCode.created_at)).where(
            OneTimeCode.factor_id == factor.id)).scalar())
        if (last or factor.created_at) <= window:
            _discard(factor)
            removed += 1
    return removed


def held_attempt(user: User, attempt_id: object) -> LoginAttempt | None:
    """The browser's live phone-verification attempt, if it is this account's."""
    if not isinstance(attempt_id, str) or len(attempt_id) > 64:
        return None
    attempt = db.session.get(LoginAttempt, attempt_id)
    if (attempt is None or attempt.user_id != user.id or attempt.purpose != PURPOSE
            or attempt.completed_at is not None or attempt.expires_at <= clock.now()):
        return None
    return attempt


def attempt_for(user: User, attempt_id: object) -> LoginAttempt:
    """The browser's attempt, or a new one (the caller keeps its id in the browser)."""
    attempt = held_attempt(user, attempt_id)
    if attempt is None:
        now = clock.now()
        attempt = LoginAttempt(id=secrets.token_urlsafe(24), user_id=user.id, purpose=PURPOSE,
                               amr=[], created_at=now, expires_at=now)
        db.session.add(attempt)
    return attempt


def has_live_code(factor: Factor, attempt: LoginAttempt | None) -> bool:
    if attempt is None:
        return False
    return db.session.execute(select(OneTimeCode.id).where(
        OneTimeCode.attempt_id == attempt.id, OneTimeCode.factor_id == factor.id,
        OneTimeCode.used_at.is_(None), OneTimeCode.expires_at > clock.now(),
        OneTimeCode.attempts < policy().mfa.code_attempts).limit(1)).first() is not None


def _send(factor: Factor, attempt: LoginAttempt) -> Sent:
    result = codes.send(factor, attempt)
    if result.sent:
        # the attempt lives as long as the newest code sent for it
        attempt.expires_at = clock.now() + timedelta(seconds=policy().mfa.code_lifetime)
    return Sent(result.sent, result.message, codes.mask(factor.destination or ""))


# -- the change ----------------------------------------------------------------------------
def validate_number(user: User, raw_phone: str) -> str:
    """The E.164 form of a usable new mobile number, else PhoneChangeError."""
    try:
        number = codes.normalise_phone(raw_phone)
    except codes.PhoneError as exc:
        raise PhoneChangeError(str(exc)) from None
    if number == user.phone_number and user.phone_number_verified:
        raise PhoneChangeError(SAME_NUMBER)
    return number


def request_change(user: User, raw_phone: str, attempt: LoginAttempt) -> Sent:
    """Validate and normalise the new number (PhoneChangeError), then text a code to it.
    Call only after the current password was proven. When nothing was sent (cool-down, cap,
    gateway failure) the caller rolls back, so the pending state stays as it was."""
    number = validate_number(user, raw_phone)
    expire_stale(user)
    factor = pending(user)
    if factor is None:
        factor = Factor(user_id=user.id, kind="sms", label=PENDING_LABEL,
                        created_at=clock.now(), destination=number)
        db.session.add(factor)
        db.session.flush()  # codes.send() needs factor.id
    else:
        db.session.execute(update(OneTimeCode).where(
            OneTimeCode.factor_id == factor.id, OneTimeCode.used_at.is_(None))
            .values(used_at=clock.now()).execution_options(synchronize_session=False))
        factor.destination = number
    result = _send(factor, attempt)
    if result.sent:
        audit.record("account.phone_change_requested", user_id=user.id, phone=result.masked)
    return result


def resend(user: User, attempt: LoginAttempt) -> Sent:
    """Another code to the number being verified (cool-down and cap apply)."""
    factor = pending(user)
    if factor is None:
        return Sent(False, NO_PENDING, "")
    return _send(factor, attempt)


def confirm_change(user: User, attempt: LoginAttempt | None, code: str) -> Confirmed:
    """Check the code; on success the number becomes the account's, verified, and the pending
    verification is gone. A wrong guess uses up one of the code's tries (the caller commits)."""
    factor = pending(user)
    if factor is None:
        return Confirmed(False, NO_PENDING)
    if attempt is None or not has_live_code(factor, attempt):
        return Confirmed(False, EXPIRED)
    if not codes.verify(factor, attempt, code):
        return Confirmed(False, WRONG)
    previous = user.phone_number
    user.phone_number = factor.destination
    user.phone_number_verified = True
    masked = codes.mask(factor.destination or "")
    for row in _pending_rows(user):
        _discard(row)
    db.session.execute(update(LoginAttempt).where(LoginAttempt.id == attempt.id)
                       .values(completed_at=clock.now())
                       .execution_options(synchronize_session=False))
    audit.record("account.phone_changed", user_id=user.id, phone=masked,
                 previous=codes.mask(previous) if previous else None)
    return Confirmed(True, masked=masked)


def send_phone_changed(user: User, masked: str) -> None:
    """After commit: tell the account's email address (notices.py style)."""
    with speaking(user.language):
        send_mail(user.email, _("Your phone number was changed"),
                  _("Hello %(name)s,\n\nThe phone number of your account was changed to "
                    "%(masked)s at %(when)s UTC, after a code sent to it was entered. If you did "
                    "not do this, change your password and tell your facility's security team "
                    "at once.\n", name=user.name or user.username, masked=masked,
                    when=f"{clock.now():%Y-%m-%d %H:%M}"))
