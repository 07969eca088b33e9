"""Emails that tell an account's owner what happened to it (sent after the change commits)."""

from __future__ import annotations

from idp import clock
from idp.accounts.models import User
from idp.context import policy
from idp.notify.mailer import send_mail


def account_locked(user: User) -> None:
    until = user.locked_until or clock.now()
    minutes = policy().lockout.lock_duration // 60
    send_mail(user.email, "Your account was locked after failed sign-in attempts",
              f"Hello {user.name or user.username},\n\n"
              f"After {policy().lockout.max_failures} failed sign-in attempts your account is "
              f"locked for {minutes} minutes, until {until:%Y-%m-%d %H:%M} UTC.\n\n"
              "To sign in before then, set a new password with \u201cForgot password\u201d on "
              "the sign-in page: that also ends the lock.\n\n"
              "If this was not you, someone may be trying to guess your password: change it "
              "and tell your facility's security team.\n")


def recovery_code_used(user: User) -> None:
    send_mail(user.email, "A recovery code was used to sign in",
              f"Hello {user.name or user.username},\n\nA recovery code was used to sign in to "
              f"your account at {clock.now():%Y-%m-%d %H:%M} UTC. If this was not you, contact "
              "your facility's security team at once.\n")


def factor_changed(user: User, what: str) -> None:
    send_mail(user.email, "Your sign-in methods changed",
              f"Hello {user.name or user.username},\n\n{what} "
              f"({clock.now():%Y-%m-%d %H:%M} UTC). If you did not do this, contact your "
              "facility's security team at once.\n")


def password_changed(user: User) -> None:
    send_mail(user.email, "Your password was changed",
              f"Hello {user.name or user.username},\n\nYour password was changed at "
              f"{clock.now():%Y-%m-%d %H:%M} UTC. If you did not do this, contact your "
              "facility's security team at once.\n")
