"""Password rules (policies/password.toml), history, expiry and temporary passwords."""

from __future__ import annotations

import hashlib
import math
import string
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from zxcvbn import zxcvbn

from idp import clock
from idp.accounts.models import PasswordHistory, User
from idp.context import policy, runtime
from idp.core.i18n import gettext as _
from idp.extensions import db

ZXCVBN_MAX = 72  # zxcvbn's own default bound


def problems(password: str, user: User | None = None, *, check_history: bool = True
             ) -> list[str]:
    """Every rule the password breaks, in words a person can act on (empty list: acceptable)."""
    rules = policy().password.rules
    found: list[str] = []
    if len(password) < rules.min_length:
        found.append(_("Use at least %(n)s characters.", n=rules.min_length))
    if len(password) > rules.max_length:
        found.append(_("Use at most %(n)s characters.", n=rules.max_length))
    if rules.require_upper and not any(c.isupper() for c in password):
        found.append(_("Include an upper-case letter."))
    if rules.require_lower and not any(c.islower() for c in password):
        found.append(_("Include a lower-case letter."))
    if rules.require_digit and not any(c.isdigit() for c in password):
        found.append(_("Include a digit."))
    if rules.require_symbol and not any(c in string.punctuation or c.isspace() or
                                        not c.isascii() for c in password):
        found.append(_("Include a symbol such as ! # % or a space."))
    personal = _personal_words(user)
    lowered = password.lower()
    if any(len(w) >= 4 and w in lowered for w in personal):
        found.append(_("Do not use your name, username, NPI or email address in it."))
    # zxcvbn refuses (ValueError) more than ZXCVBN_MAX characters, and its cost grows quickly
    # with length (a random 200 take a minute and a half): a longer one is scored by its start
    score = zxcvbn(password[:ZXCVBN_MAX], user_inputs=personal)["score"]
    if score < rules.min_strength:
        found.append(_("It is too easy to guess: avoid common words, names, dates, "
                       "keyboard patterns and repeats; a few unrelated words work well."))
    if _breached(password):
        found.append(_("This password has appeared in a data breach: choose another."))
    if user is not None and check_history and _reused(user, password, rules.history):
        found.append(_("Do not reuse any of your last %(n)s passwords.", n=rules.history))
    return found


def _personal_words(user: User | None) -> list[str]:
    if user is None:
        return []
    words = [user.username, user.given_name, user.family_name, user.npi or "",
             (user.email or "").split("@")[0], user.email or ""]
    words += user.username.replace(".", " ").replace("_", " ").replace("-", " ").split()
    return [w.lower() for w in words if w]


def _reused(user: User, password: str, depth: int) -> bool:
    if depth <= 0:
        return False
    hasher = runtime().hasher
    hashes = [user.password_hash] if user.password_hash else []
    hashes += db.session.execute(
        select(PasswordHistory.password_hash).where(PasswordHistory.user_id == user.id)
        .order_by(PasswordHistory.created_at.desc(), PasswordHistory.id.desc())
        .limit(max(depth - 1, 0))).scalars().all()
    for stored in hashes[:depth]:
        try:
            if hasher.verify(stored, password):
                return True
        except (VerificationError, InvalidHashError):
            continue
    return False


@lru_cache(maxsize=4)
def _breach_index(path: str, mtime: float) -> frozenset[str]:
    with open(path, encoding="ascii", errors="ignore") as handle:
        return frozenset(line.split(":", 1)[0].strip().upper() for line in handle if line.strip())


def _breached(password: str) -> bool:
    """Offline check against an operator-supplied file of SHA-1 hashes (optional)."""
    path = policy().password.breached_hashes_file
    if not path or not Path(path).is_file():
        return False
    digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
    return digest in _breach_index(path, Path(path).stat().st_mtime)


def set_password(user: User, password: str, *, temporary: bool = False) -> None:
    """Store a new password (argon2id); keep the previous hash for the history rule."""
    depth = policy().password.rules.history
    now = clock.now()
    if user.password_hash and depth > 1 and user.id is not None:
        db.session.add(PasswordHistory(user_id=user.id, password_hash=user.password_hash,
                                       created_at=now))
        db.session.flush()
        keep = select(PasswordHistory.id).where(PasswordHistory.user_id == user.id).order_by(
            PasswordHistory.created_at.desc(), PasswordHistory.id.desc()).limit(depth - 1)
        db.session.execute(delete(PasswordHistory).where(
            PasswordHistory.user_id == user.id, PasswordHistory.id.not_in(keep.scalar_subquery())))
    user.password_hash = runtime().hasher.hash(password)
    user.password_changed_at = now
    user.must_change_password = temporary
    user.temporary_password_expires_at = (
        now + timedelta(seconds=policy().password.temporary_lifetime) if temporary else None)


def expires_at(user: User) -> datetime | None:
    days = policy().password.rules.max_age_days
    if not days or user.password_changed_at is None:
        return None
    return user.password_changed_at + timedelta(days=days)


def is_expired(user: User) -> bool:
    when = expires_at(user)
    return when is not None and when <= clock.now()


def days_left(user: User) -> int | None:
    """Days until expiry when inside the warning window, else None."""
    when = expires_at(user)
    warn = policy().password.rules.warn_days
    if when is None or not warn:
        return None
    left = when - clock.now()
    return max(math.ceil(left.total_seconds() / 86400), 0) if left <= timedelta(days=warn) \
        else None


def temporary_expired(user: User) -> bool:
    return bool(user.must_change_password and user.temporary_password_expires_at
                and user.temporary_password_expires_at <= clock.now())


def change_required(user: User) -> str | None:
    """Why the user must set a new password before anything else, or None."""
    if user.must_change_password:
        # no expiry: forced without a temporary password ("this wasn't me", idp.accounts.
        # compromise)
        return "temporary" if user.temporary_password_expires_at else "required"
    if is_expired(user):
        return "expired"
    return None
