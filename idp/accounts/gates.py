"""Steps a signed-in user must take before any token is issued: a forced password change,
then the daily security acknowledgment. The authorize endpoint and the token endpoint's
refresh grant both consult this one list."""

from __future__ import annotations

from idp.accounts import acknowledgment, passwords
from idp.accounts.models import User


def pending(user: User) -> str | None:
    """The endpoint of the first step still owed, or None."""
    if passwords.change_required(user):
        return "accounts.required_password_change"
    if acknowledgment.needed(user):
        return "accounts.acknowledge"
    return None
