"""Emails that tell an account's owner what happened to it (sent after the change commits),
in the account's language (User.language) when it has one."""

from __future__ import annotations

from idp import clock
from idp.accounts.models import User
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.core.i18n import speaking
from idp.notify.mailer import send_mail


def account_locked(user: User) -> None:
    with speaking(user.language):
        until = user.locked_until or clock.now()
        minutes = policy().lockout.lock_duration // 60
        send_mail(user.email, _("Your account was locked after failed sign-in attempts"),
                  _("Hello %(name)s,\n\n"
                    "After %(failures)s failed sign-in attempts your account is locked for "
                    "%(minutes)s minutes, until %(until)s UTC.\n\n"
                    "To sign in before then, set a new password with \u201cForgot "
                    "password\u201d on the sign-in page: that also ends the lock.\n\n"
                    "If this was not you, someone may be trying to guess your password: "
                    "change it and tell your facility's security team.\n",
                    name=_name(user), failures=policy().lockout.max_failures, minutes=minutes,
                    until=f"{until:%Y-%m-%d %H:%M}"))


def recovery_code_used(user: User) -> None:
    with speaking(user.language):
        send_mail(user.email, _("A recovery code was used to sign in"),
                  _("Hello %(name)s,\n\nA recovery code was used to sign in to your account at "
                    "%(when)s UTC. If this was not you, contact your facility's security team at "
                    "once.\n", name=_name(user), when=_now()))


def factor_changed(user: User, what: str) -> None:
    with speaking(user.language):
        send_mail(user.email, _("Your sign-in methods changed"),
                  _("Hello %(name)s,\n\n%(what)s (%(when)s UTC). If you did not do this, contact "
                    "your facility's security team at once.\n", name=_name(user), what=what,
                    when=_now()))


def password_changed(user: User) -> None:
    with speaking(user.language):
        send_mail(user.email, _("Your password was changed"),
                  _("Hello %(name)s,\n\nYour password was changed at %(when)s UTC. If you did not "
                    "do this, contact your facility's security team at once.\n",
                    name=_name(user), when=_now()))


def _name(user: User) -> str:
    return user.name or user.username


def _now() -> str:
    return f"{clock.now():%Y-%m-%d %H:%M}"
