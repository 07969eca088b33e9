"""The code factors, SMS and email: random codes, stored hashed, single use, bound to one login
attempt, short lived, with a resend cool-down and cap and a per-code attempt limit. Enrolled on
/mfa/enroll/sms and /mfa/enroll/email (idp.mfa.enroll_views): the destination first, then the
code sent there confirms it."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import phonenumbers
from flask import url_for
from sqlalchemy import delete, select, update

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy
from idp.core.crypto import digest
from idp.core.i18n import gettext as _
from idp.core.i18n import speaking
from idp.extensions import db
from idp.mfa.factors.base import FactorType, Notice
from idp.mfa.factors.registry import builtin
from idp.mfa.models import Factor, LoginAttempt, OneTimeCode
from idp.notify import sms
from idp.notify.mailer import send_mail


class PhoneError(ValueError):
    """The phone number cannot be used; the message says why."""


def normalise_phone(raw: str, region: str = "US") -> str:
    """E.164 form of a valid mobile-capable number."""
    try:
        number = phonenumbers.parse((raw or "").strip()[:40], region)
    except phonenumbers.NumberParseException:
        raise PhoneError(_("Enter a phone number such as (555) 201-3344 or +1 555 201 3344.")) \
            from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneError(_("This is not a valid phone number."))
    kind = phonenumbers.number_type(number)
    if kind not in (phonenumbers.PhoneNumberType.MOBILE,
                    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        raise PhoneError(_("Use a mobile number that can receive text messages."))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(destination: str) -> str:
    if "@" in destination:
        name, _at, domain = destination.partition("@")
        return f"{name[:1]}•••@{domain}"
    return "•••" + destination[-4:]


@dataclass(frozen=True)
class SendResult:
    sent: bool
    message: str
    undelivered: bool = False  # the gateway or mail server did not take it (an outage)


def refusal(attempt: LoginAttempt, kind: str) -> SendResult | None:
    """Why no code may be sent on this channel (`kind`) of this sign-in attempt or enrolment
    now, or None. The cool-down and the cap count the codes this attempt sent on this channel
    only: another sign-in, another enrolment or the other channel never holds a send back."""
    rules = policy().mfa
    now = clock.now()
    recent = db.session.execute(
        select(OneTimeCode.created_at, Factor.destination)
        .join(Factor, Factor.id == OneTimeCode.factor_id)
        .where(OneTimeCode.attempt_id == attempt.id, Factor.kind == kind,
               OneTimeCode.created_at > now - timedelta(seconds=rules.resend_window))
        .order_by(OneTimeCode.created_at.desc(), OneTimeCode.id.desc())).all()
    if not recent:
        return None
    last, where = clock.aware(recent[0][0]), recent[0][1] or ""
    if last is not None and now - last < timedelta(seconds=rules.resend_cooldown):
        wait = max(1, rules.resend_cooldown - int((now - last).total_seconds()))
        return SendResult(False, _("A code was sent to %(where)s just now. Enter it, or ask "
                                   "for a new one in %(wait)s s.", where=mask(where), wait=wait))
    if len(recent) >= rules.resend_cap:
        return SendResult(False, _("Too many codes were sent. Wait a few minutes, or use "
                                   "another way to verify."))
    return None


def send(factor: Factor, attempt: LoginAttempt) -> SendResult:
    """Send a new code unless the cool-down or the cap of this attempt's channel forbids it."""
    rules = policy().mfa
    now = clock.now()
    refused = refusal(attempt, factor.kind)
    if refused is not None:
        return refused
    code = "".join(secrets.choice("0123456789") for _ in range(rules.code_length))
    item = OneTimeCode(
        attempt_id=attempt.id, factor_id=factor.id, user_id=attempt.user_id,
        code_hash=digest(f"{attempt.id}:{code}"), created_at=now,
        expires_at=now + timedelta(seconds=rules.code_lifetime))
    db.session.add(item)
    minutes = rules.code_lifetime // 60
    with speaking(_language_of(attempt.user_id)):  # the account's language, if it has one
        text = _("Your Provider Identity code is %(code)s. It expires in %(minutes)s minutes. "
                 "Never share it: staff will never ask for it.", code=code, minutes=minutes)
        subject = _("Your sign-in code")
    if factor.kind == "sms":
        delivered = sms.sender().send(factor.destination or "", text)
    else:
        db.session.commit()  # the code must exist before the mail can be read
        delivered = send_mail(factor.destination or "", subject, text + "\n", queue=False)
    if not delivered:
        return _undelivered(factor, item)
    return SendResult(True, _("We sent a code to %(where)s.", where=mask(factor.destination or "")))


def _language_of(user_id: int | None) -> str | None:
    user = db.session.get(User, user_id) if user_id is not None else None
    return user.language if user is not None else None


def _undelivered(factor: Factor, item: OneTimeCode) -> SendResult:
    """The channel is down: the code never left, so it neither counts toward the resend
    cool-down and cap nor stays usable; the page offers the account's other ways."""
    if item.id is None:  # not flushed yet (the SMS path): drop it from the transaction
        db.session.expunge(item)
    else:  # committed before the mail was sent (the email path)
        db.session.execute(delete(OneTimeCode).where(OneTimeCode.id == item.id)
                           .execution_options(synchronize_session=False))
    audit.record("mfa.code_undelivered", user_id=factor.user_id, factor=factor.kind)
    where = mask(factor.destination or "")
    text = _("We could not send a text message to %(where)s: our text message service is not "
             "answering right now.", where=where) if factor.kind == "sms" else \
        _("We could not send an email to %(where)s: our email service is not answering right "
          "now.", where=where)
    return SendResult(False, text, undelivered=True)


def verify(factor: Factor, attempt: LoginAttempt, code: str) -> bool:
    """The newest live code of this attempt and factor; a wrong guess uses up one try."""
    rules = policy().mfa
    now = clock.now()
    item = db.session.execute(
        select(OneTimeCode).where(
            OneTimeCode.attempt_id == attempt.id, OneTimeCode.factor_id == factor.id,
            OneTimeCode.used_at.is_(None), OneTimeCode.expires_at > now,
            OneTimeCode.attempts < rules.code_attempts)
        .order_by(OneTimeCode.created_at.desc(), OneTimeCode.id.desc()).limit(1)
    ).scalar_one_or_none()
    code = (code or "").strip().replace(" ", "")
    if item is None:
        return False
    if not hmac.compare_digest(item.code_hash, digest(f"{attempt.id}:{code}")):
        db.session.execute(update(OneTimeCode).where(OneTimeCode.id == item.id)
                           .values(attempts=OneTimeCode.attempts + 1)
                           .execution_options(synchronize_session=False))
        return False
    used = db.session.execute(
        update(OneTimeCode).where(OneTimeCode.id == item.id, OneTimeCode.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False)).rowcount
    return bool(used)


def sent_already(attempt: LoginAttempt, factor: Factor) -> bool:
    """Has this attempt sent a code for this factor (the challenge page sends one at first)?"""
    return db.session.execute(select(OneTimeCode.id).where(
        OneTimeCode.attempt_id == attempt.id, OneTimeCode.factor_id == factor.id).limit(1)
    ).first() is not None


class OtpCodeFactor(FactorType):
    """A code sent to the factor's destination (a phone number, an email address)."""

    resendable = True
    channel = ""
    default_label = ""

    def enroll_url(self, next_url: str | None) -> str | None:
        return url_for("mfa.enroll_code", kind=self.kind, next=next_url)

    def pending(self, user: User, destination: str) -> Factor:
        """The unconfirmed factor a first code is sent for (saved: codes refer to it)."""
        factor = Factor(user_id=user.id, kind=self.kind, created_at=clock.now(),
                        destination=destination, label=self.default_label)
        db.session.add(factor)
        db.session.flush()
        return factor

    def destination(self, user: User, form: Mapping[str, str]) -> str:
        """Where codes go, from the enrollment form (PhoneError: not usable)."""
        raise NotImplementedError

    def enroll(self, user: User, **details: Any) -> Factor:
        """details: pending (the factor of `pending()` whose code the user entered)."""
        factor: Factor = details["pending"]
        factor.confirmed_at = clock.now()
        return factor

    def challenge(self, attempt: LoginAttempt, user: User, factor: Factor, *,
                  resend: bool = False) -> Notice | None:
        if not resend and sent_already(attempt, factor):
            return None
        result = send(factor, attempt)
        db.session.commit()
        return Notice(result.message, None, False) if result.sent else \
            Notice(None, result.message, result.undelivered)

    def prompt(self, factor: Factor) -> str:
        where = mask(factor.destination or "")
        return _("Code sent by text message to %(where)s", where=where) if self.kind == "sms" \
            else _("Code sent by email to %(where)s", where=where)

    def verify(self, attempt: LoginAttempt, user: User, factor: Factor | None,
               response: Mapping[str, str]) -> bool:
        return factor is not None and verify(factor, attempt, response.get("code", "")[:64])


@builtin
class SmsFactor(OtpCodeFactor):
    kind = "sms"
    icon = "phone"
    channel = "text message"
    default_label = "Text message"

    def destination(self, user: User, form: Mapping[str, str]) -> str:
        return normalise_phone(form.get("phone", ""))


@builtin
class EmailFactor(OtpCodeFactor):
    kind = "email"
    icon = "mail"
    channel = "email"
    default_label = "Email code"

    def destination(self, user: User, form: Mapping[str, str]) -> str:
        return user.email
