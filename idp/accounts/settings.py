"""Account settings: change password, own sessions (list, end one, sign out everywhere), change
email with a verification link; and the sign-out helpers that password resets, the helpdesk CLI
and these pages share. Plain functions over the ORM: the caller commits, then sends email."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update

from idp import clock
from idp.accounts import lockout, passwords, reset, verifiers
from idp.accounts.models import EmailChange, User
from idp.accounts.revocation import end_sessions, revoke_session_tokens, revoke_tokens
from idp.accounts.service import verify_password
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core.crypto import digest
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.core.i18n import offered, speaking
from idp.extensions import db
from idp.notify import outbox
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
WRONG_CURRENT = _l("Your current password is not right.")
LOCKED = ("Your account is locked after too many failed attempts. Try again later or ask your "
          "IT helpdesk.")


class SettingsError(ValueError):
    """A settings request cannot be honoured; the message says why, in plain words."""


# -- signing out ---------------------------------------------------------------------------
def sign_out_everywhere(user: User, reason: str, current: SsoSession | None = None, *,
                        actor: str | None = None) -> int:
    """Every session ended (the current one's cookie cleared too), every token revoked."""
    if current is not None:
        sessions.end(current, reason)
        db.session.flush()  # so the UPDATE below counts only the others
    ended = end_sessions(user.id, reason) + (1 if current is not None else 0)
    revoke_tokens(user.id)
    audit.record("sessions.ended_all", user_id=user.id, actor=actor, reason=reason,
                 sessions_ended=ended)
    return ended


def live_sessions(user: User) -> list[SsoSession]:
    """The account's sessions that still work (not ended, not past a timeout), newest first."""
    now = clock.now()
    rules = policy().session
    return list(db.session.execute(select(SsoSession).where(
        SsoSession.user_id == user.id, SsoSession.ended_at.is_(None),
        SsoSession.last_seen_at > now - timedelta(seconds=rules.idle_timeout),
        SsoSession.created_at > now - timedelta(seconds=rules.absolute_timeout))
        .order_by(SsoSession.last_seen_at.desc())).scalars())


def end_own_session(user: User, sid: str, current: SsoSession | None) -> bool:
    """End one session of this account and revoke its tokens. A session of another account
    or an unknown sid changes nothing (False)."""
    if current is not None and sid == current.id and current.user_id == user.id:
        sessions.end(current, "user")
        ended = 1
    else:
        ended = len(sessions.end_where(SsoSession.id == sid, SsoSession.user_id == user.id,
                                       reason="user"))
    if not ended:
        return False
    revoke_session_tokens(user.id, sid)
    audit.record("session.ended", user_id=user.id, sid=sid)
    return True


# -- language ------------------------------------------------------------------------------
def set_language(user: User, language: str) -> None:
    """The account's language: a code of web.toml `locales`, or "" for the browser's. The
    caller commits. SettingsError for anything else."""
    if language == "":
        chosen = None
    else:
        chosen = offered(language)
        if chosen is None:
            raise SettingsError(_("Choose one of the languages listed."))
    if user.language != chosen:
        user.language = chosen
        audit.record("account.language_changed", user_id=user.id, language=chosen or "browser")


# -- password ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PasswordChange:
    ok: bool
    errors: list[str] = field(default_factory=list)
    newly_locked: bool = False


def prove_password(user: User, current_password: str) -> PasswordChange:
    """Re-authentication for a sensitive change. A wrong password counts as a failed sign-in
    (lockout, committed by the caller with its audit event); a locked account cannot prove
    anything."""
    right = verify_password(user, current_password)  # constant work, locked or not
    if lockout.is_locked(user):
        return PasswordChange(False, [LOCKED])
    if not right:
        failure = lockout.register_failure(user)  # committed by the caller with the event
        audit.record("reauthentication.failure", user_id=user.id)
        if failure is None:
            return PasswordChange(False, [LOCKED])
        return PasswordChange(False, [WRONG_CURRENT], failure.newly_locked)
    if not lockout.register_success(user):
        return PasswordChange(False, [LOCKED])
    return PasswordChange(True)


def change_password(user: User, current: SsoSession, current_password: str,
                    new_password: str, mismatch: list[str] | None = None) -> PasswordChange:
    """The settings page's change. The new password's rules are judged only once the current
    one is proven, so the page tells a stranger nothing about the account's earlier passwords.
    On success every other session ends and its tokens are revoked."""
    proof = prove_password(user, current_password)
    if not proof.ok:
        return proof
    if verifiers.for_user(user) is not None:
        return PasswordChange(False, [_("Your password is kept by your organisation's "
                                        "directory: change it there, as you do for your "
                                        "computer sign-in.")])
    errors = list(mismatch or []) + passwords.problems(new_password, user)
    if errors:
        return PasswordChange(False, errors)
    passwords.set_password(user, new_password)
    ended = end_sessions(user.id, "password_changed", keep_sid=current.id)
    revoke_tokens(user.id, keep_sid=current.id)
    audit.record("password.changed", user_id=user.id, reason="settings", sessions_ended=ended)
    return PasswordChange(True)


# -- email ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmailChangeRequest:
    user: User
    old_email: str
    new_email: str
    url: str


def request_email_change(user: User, new_email: str) -> EmailChangeRequest:
    """A verification link for the new address (24 h, single use); older requests lapse."""
    new_email = (new_email or "").strip()
    if len(new_email) > 254 or not EMAIL_RE.match(new_email):
        raise SettingsError(_("Enter a valid email address, such as name@hospital.org."))
    if new_email.lower() == (user.email or "").lower():
        raise SettingsError(_("This is already your email address."))
    now = clock.now()
    db.session.execute(update(EmailChange).where(
        EmailChange.user_id == user.id, EmailChange.used_at.is_(None),
        EmailChange.expires_at > now).values(expires_at=now)
        .execution_options(synchronize_session=False))
    token = secrets.token_urlsafe(32)
    db.session.add(EmailChange(
        user_id=user.id, new_email=new_email, token_hash=digest(token),
        expires_at=now + timedelta(seconds=policy().password.reset_link_lifetime)))
    audit.record("email.change_requested", user_id=user.id)
    return EmailChangeRequest(user, user.email, new_email,
                              f"{settings().issuer}/account/email/verify/{token}")


def queue_email_change(change: EmailChangeRequest) -> list[int]:
    """In the change's transaction: the link to the new address and a heads-up to the old one
    go to the mail outbox (sent after the commit: outbox.deliver_now); their row ids. In the
    account's language when it has one."""
    with speaking(change.user.language):
        return _queue_email_change(change)


def _queue_email_change(change: EmailChangeRequest) -> list[int]:
    hours = policy().password.reset_link_lifetime // 3600
    name = change.user.name or change.user.username
    rows = [
        outbox.enqueue(
            change.new_email, _("Confirm your new email address"),
            _("Hello %(name)s,\n\nTo use this address for your account %(username)s, open this "
              "link within %(hours)s hours while signed in:\n\n%(url)s\n\nIf you did not ask "
              "for this, ignore this message.\n", name=name, username=change.user.username,
              hours=hours, url=change.url)),
        outbox.enqueue(
            change.old_email, _("A change of your email address was requested"),
            _("Hello %(name)s,\n\nSomeone signed in to your account asked to change its email "
              "address to %(email)s. Nothing changes until the new address is confirmed. If "
              "this was not you, change your password and tell your facility's security team "
              "at once.\n", name=name, email=change.new_email)),
    ]
    return [row.id for row in rows]


def confirm_email_change(user: User, token: str) -> bool:
    """Apply a pending change of this account, once. Unknown, expired, used or another
    account's links change nothing (False)."""
    if not token or len(token) > 128:
        return False
    now = clock.now()
    item = db.session.execute(select(EmailChange).where(
        EmailChange.token_hash == digest(token))).scalar_one_or_none()
    if item is None or item.user_id != user.id:
        return False
    claimed = db.session.execute(update(EmailChange).where(
        EmailChange.id == item.id, EmailChange.used_at.is_(None), EmailChange.expires_at > now)
        .values(used_at=now).execution_options(synchronize_session=False)).rowcount
    if claimed != 1:
        return False
    user.email = item.new_email
    user.email_verified = True
    reset.revoke_links(user.id)  # links mailed to the old address stop working
    audit.record("email.changed", user_id=user.id)
    return True


# -- helpdesk ------------------------------------------------------------------------------
def set_disabled(user: User, disabled: bool, *, actor: str) -> int:
    """Disable (ending every session, revoking tokens and reset links) or enable an account."""
    user.disabled = disabled
    ended = 0
    if disabled:
        ended = end_sessions(user.id, "disabled")
        revoke_tokens(user.id)
        reset.revoke_links(user.id)
    audit.record("user.disabled" if disabled else "user.enabled", user_id=user.id, actor=actor,
                 sessions_ended=ended)
    return ended
