"""The password asked again of a signed-in user before a sensitive step (break-glass access, the
EPCS signing ceremony): the same lockout, audit trail and lock notice as the sign-in page, so a
feature that re-authenticates cannot forget one of them."""

from __future__ import annotations

from typing import Any

from idp.accounts import lockout, notices
from idp.accounts import service as accounts
from idp.accounts.models import User
from idp.audit import service as audit
from idp.extensions import db


def password_again(user: User, password: str, *, purpose: str, **details: Any) -> bool:
    """True when `password` is the user's and the account is not locked (the success is audited;
    the caller commits with its own next step). A failure counts towards lockout, is audited
    with reason `<purpose>_password` and committed, and a newly locked account is notified."""
    if not lockout.is_locked(user) and accounts.verify_password(user, password):
        audit.record("login.password_verified", user_id=user.id, purpose=purpose)
        return True
    failure = None if lockout.is_locked(user) else lockout.register_failure(user)
    audit.record("login.failure", user_id=user.id, reason=f"{purpose}_password", **details)
    db.session.commit()
    if failure is not None and failure.newly_locked:
        notices.account_locked(user)
    return False
