"""Forgot password: reset links (random 256-bit tokens stored as SHA-256, single use, 24 hours,
superseded by a newer one), the reset itself, and the helpdesk's resets (a link or a temporary
password). The caller commits, then sends the emails."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from idp import clock
from idp.accounts import lockout, passwords, verifiers
from idp.accounts.models import PasswordResetToken, User
from idp.accounts.revocation import end_sessions, revoke_tokens
from idp.accounts.service import find_by_login
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core.crypto import digest
from idp.core.i18n import gettext as _
from idp.core.i18n import speaking
from idp.extensions import db
from idp.notify import outbox

MAX_TOKEN_LENGTH = 128
# Temporary passwords: characters a helpdesk can read out without confusion (no 0/O, 1/l/I).
_UPPER = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_LOWER = "abcdefghijkmnopqrstuvwxyz"
_DIGITS = "23456789"
_SYMBOLS = "!#%+-=?@"
TEMPORARY_EXTRA_LENGTH = 8  # beyond the policy's minimum length


@dataclass(frozen=True)
class ResetLink:
    user: User
    url: str


def revoke_links(user_id: int, now: datetime | None = None) -> int:
    """Every unused reset link of the account stops working."""
    return db.session.execute(update(PasswordResetToken).where(
        PasswordResetToken.user_id == user_id, PasswordResetToken.used_at.is_(None),
        PasswordResetToken.revoked_at.is_(None)).values(revoked_at=now or clock.now())
        .execution_options(synchronize_session=False)).rowcount


def issue_link(user: User) -> ResetLink:
    """A new link for the account; every older unused link of it is revoked."""
    token = secrets.token_urlsafe(32)
    now = clock.now()
    revoke_links(user.id, now)
    db.session.add(PasswordResetToken(
        user_id=user.id, token_hash=digest(token), created_at=now,
        expires_at=now + timedelta(seconds=policy().password.reset_link_lifetime)))
    return ResetLink(user, f"{settings().issuer}/password/reset/{token}")


def find_accounts(identifier: str) -> list[User]:
    """Username or NPI (as at sign-in), or the registered email address."""
    identifier = (identifier or "").strip()
    if "@" not in identifier or len(identifier) > 254:
        found = find_by_login(identifier)
        return [found] if found is not None else []
    return list(db.session.execute(select(User).where(
        func.lower(User.email) == identifier.lower()).order_by(User.id)).scalars())


def request_reset(identifier: str) -> list[ResetLink]:
    """The forgot-password form. Whatever the identifier names (nobody, a disabled account,
    one or more accounts), the same statements run: a token is made and hashed, an UPDATE
    revokes links, an audit event is written. Links come back only for usable accounts."""
    accounts = find_accounts(identifier)
    # A password kept elsewhere (the hospital directory) is reset there, never here.
    usable = [u for u in accounts if not u.disabled and verifiers.for_user(u) is None]
    links = [issue_link(user) for user in usable]
    if not usable:
        digest(secrets.token_urlsafe(32))
        revoke_links(0)  # matches no row; costs what a real revocation costs
    for user in usable:
        audit.record("password.reset_requested", user_id=user.id)
    if not usable:
        audit.record("password.reset_requested", user_id=accounts[0].id if accounts else None,
                     refused=("password_elsewhere" if any(not u.disabled for u in accounts)
                              else "disabled") if accounts else "unknown")
    return links


def link_mail(link: ResetLink, *, helpdesk: bool = False) -> tuple[str, str, str]:
    """(to, subject, body) of the email carrying a reset link."""
    with speaking(link.user.language):
        return _link_mail(link, helpdesk)


def _link_mail(link: ResetLink, helpdesk: bool) -> tuple[str, str, str]:
    hours = policy().password.reset_link_lifetime // 3600
    user = link.user
    name = user.name or user.username
    why = _("Your IT helpdesk started a password reset for your account %(username)s.",
            username=user.username) if helpdesk else \
        _("Someone (we hope you) asked to reset the password of your account %(username)s.",
          username=user.username)
    return (user.email, _("Reset your password"),
            _("Hello %(name)s,\n\n", name=name) + why + "\n\n" +
            _("To choose a new password, open this link within %(hours)s hours. It works "
              "once, and only the newest link you were sent works:\n\n%(url)s\n\n"
              "If you did not ask for this, ignore this message: your password stays "
              "as it is.\n", hours=hours, url=link.url))


def send_link(link: ResetLink, *, helpdesk: bool = False) -> bool:
    """Email the link now (after commit) through the outbox: False when the mail server refused
    it (the outbox retries it: `idp notify deliver`)."""

    row = outbox.enqueue(*link_mail(link, helpdesk=helpdesk))
    db.session.commit()
    return outbox.deliver_now([row.id])


def valid_link(token: str) -> tuple[PasswordResetToken, User] | None:
    """The unused, unrevoked, unexpired link of an enabled account and that account, or None."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    item = db.session.execute(select(PasswordResetToken).where(
        PasswordResetToken.token_hash == digest(token))).scalar_one_or_none()
    if item is None or item.used_at is not None or item.revoked_at is not None \
            or item.expires_at <= clock.now():
        return None
    user = db.session.get(User, item.user_id)
    return (item, user) if user is not None and not user.disabled else None


def complete(item: PasswordResetToken, new_password: str) -> User | None:
    """Use the link: claim it in one UPDATE (of two concurrent uses exactly one wins), set the
    password, revoke other links, clear the lockout, end every session and revoke every token.
    None when the link was used, revoked or expired meanwhile (nothing changed)."""
    now = clock.now()
    claimed = db.session.execute(update(PasswordResetToken).where(
        PasswordResetToken.id == item.id, PasswordResetToken.used_at.is_(None),
        PasswordResetToken.revoked_at.is_(None), PasswordResetToken.expires_at > now)
        .values(used_at=now).execution_options(synchronize_session=False)).rowcount
    if claimed != 1:
        return None
    user = db.session.get(User, item.user_id)
    if user is None or user.disabled:
        db.session.rollback()
        return None
    lockout.unlock(user)
    passwords.set_password(user, new_password)  # not temporary: a forced change is cleared
    revoke_links(user.id, now)
    ended = end_sessions(user.id, "password_reset")
    revoke_tokens(user.id)
    audit.record("password.reset", user_id=user.id, sessions_ended=ended)
    return user


def temporary_password(user: User) -> str:
    """A random password that passes every rule, to be read out or sent once."""
    rules = policy().password.rules
    length = min(rules.min_length + TEMPORARY_EXTRA_LENGTH, rules.max_length)
    alphabet = _UPPER + _LOWER + _DIGITS + _SYMBOLS
    rng = secrets.SystemRandom()
    for _attempt in range(20):
        chars = [rng.choice(_UPPER), rng.choice(_LOWER), rng.choice(_DIGITS),
                 rng.choice(_SYMBOLS)] + [rng.choice(alphabet) for _pos in range(length - 4)]
        rng.shuffle(chars)
        candidate = "".join(chars)
        if not passwords.problems(candidate, user):
            return candidate
    raise RuntimeError("could not generate a temporary password that meets the policy")


def set_temporary(user: User, *, actor: str) -> str:
    """Helpdesk reset: a temporary password (changed at first sign-in, expires per policy);
    every session, token and reset link of the account ends; the lockout is cleared."""
    password = temporary_password(user)
    lockout.unlock(user)
    passwords.set_password(user, password, temporary=True)
    revoke_links(user.id)
    ended = end_sessions(user.id, "password_reset")
    revoke_tokens(user.id)
    audit.record("password.temporary_set", user_id=user.id, actor=actor, sessions_ended=ended)
    return password

