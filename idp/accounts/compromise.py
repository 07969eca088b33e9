""""This wasn't me" (/account/activity): the user reports a sign-in they did not make.

In one transaction: every SSO session of the account ends (each relying party that got tokens
in one is owed a back-channel logout token), every token is revoked, the next sign-in must set
a new password, the report is audited and raises a security alert. After the commit the user
and security staff (role `security`) are emailed. Plain functions; the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from idp import clock
from idp.accounts import settings as account_settings
from idp.accounts.models import User
from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.core.i18n import gettext as _
from idp.extensions import db
from idp.notify.mailer import send_after_response
from idp.security import alerts
from idp.sessions.models import SsoSession

SIGN_IN_EVENTS = ("login.success", "login.failure", "alert.unusual_sign_in")


@dataclass(frozen=True)
class Report:
    user: User
    sessions_ended: int
    event: AuditEvent | None  # the sign-in row reported, when one was named
    alert_id: int
    at: str


def _reported_event(user: User, seq: str | None) -> AuditEvent | None:
    """The account's own sign-in event the report names; None for anything else."""
    if not seq or not seq.isdigit() or len(seq) > 12:
        return None

    return db.session.execute(select(AuditEvent).where(
        AuditEvent.seq == int(seq), AuditEvent.user_id == user.id,
        AuditEvent.event.in_(SIGN_IN_EVENTS))).scalar_one_or_none()


def report(user: User, current: SsoSession | None, *, event_seq: str | None = None) -> Report:
    """End everything, force a password change, audit, raise the alert (caller commits)."""

    event = _reported_event(user, event_seq)
    ended = account_settings.sign_out_everywhere(user, "reported_not_me", current)
    user.must_change_password = True
    user.temporary_password_expires_at = None
    detail = {"sessions_ended": ended}
    if event is not None:
        detail.update(reported_seq=event.seq, reported_ip=event.ip,
                      reported_at=clock.aware(event.at).isoformat())
    audit.record("account.compromise_reported", user_id=user.id, **detail)
    alert = alerts.raise_alert("compromise_reported", user_id=user.id,
                               detail={**detail, "ip": event.ip if event else None},
                               actor=f"user:{user.id}")
    db.session.flush()
    return Report(user, ended, event, alert.id, clock.now().strftime("%Y-%m-%d %H:%M UTC"))


def send_notices(done: Report) -> None:
    """After commit: tell the user what happened and what to do; tell security staff."""

    user = done.user
    seen = ""
    if done.event is not None:
        seen = " " + _("The sign-in you reported was at %(when)s UTC from IP address %(ip)s.",
                       when=f"{clock.aware(done.event.at):%Y-%m-%d %H:%M}",
                       ip=done.event.ip or "unknown")
    if user.email:
        send_after_response(
            user.email, _("You reported a sign-in that was not you"),
            _("Hello %(name)s,\n\nAt %(when)s you reported that a sign-in to your account "
              "%(username)s was not you.%(seen)s\n\nWe ended every session of your account "
              "(%(ended)s) and signed you out of every application. The next time you sign in "
              "you must choose a new password. Our security team was told and may contact you. "
              "If you did not make this report yourself, contact your IT helpdesk.\n",
              name=user.name or user.username, when=done.at, username=user.username,
              seen=seen, ended=done.sessions_ended))
    alerts.notify_security(
        f"Reported sign-in: {user.username}",
        f"At {done.at} the user {user.username} (id {user.id}) reported a sign-in that was not "
        f"them.{seen}\n\nEvery session was ended ({done.sessions_ended}), every token revoked, "
        "and a password change is required at the next sign-in. Review alert "
        f"{done.alert_id} and the user's recent activity in the admin console.\n")
