"""Users and password verification (argon2id)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, or_, select

from idp.accounts import lock_shadow, lockout, passwords, verifiers
from idp.accounts.models import User
from idp.context import policy, runtime
from idp.extensions import db

NPI_RE = re.compile(r"[0-9]{10}")
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}")


class AccountError(ValueError):
    """A request to create or change an account is invalid; the message says why."""


def find_by_login(identifier: str) -> User | None:
    """One field, "Username or NPI": ten digits are an NPI, anything else a username."""
    identifier = (identifier or "").strip()
    if not identifier or len(identifier) > 254:
        return None
    if NPI_RE.fullmatch(identifier):
        return db.session.execute(select(User).where(User.npi == identifier)).scalar_one_or_none()
    return db.session.execute(
        select(User).where(User.username == identifier.lower())).scalar_one_or_none()


def verify_password(user: User | None, password: str) -> bool:
    """Verify in constant work: an unknown user still costs one argon2 verification. An account
    whose password another place keeps (idp.accounts.verifiers) is checked there, never against
    a local hash; when that place cannot be reached PasswordServiceUnavailable goes up."""
    delegate = verifiers.for_user(user)
    if delegate is not None and user is not None:
        return delegate.verify(user, password or "") is verifiers.Verdict.OK
    hasher = runtime().hasher
    stored = user.password_hash if user is not None and user.password_hash else \
        runtime().dummy_hash
    try:
        hasher.verify(stored, password or "")
    except (VerificationError, InvalidHashError):
        return False
    if user is None or not user.password_hash:
        return False
    if hasher.check_needs_rehash(stored):
        user.password_hash = hasher.hash(password)  # parameters changed in the policy
    return True


def _same_work_as_a_local_password(password: str) -> None:
    """One argon2 verification against the dummy hash (its answer unused)."""
    try:
        runtime().hasher.verify(runtime().dummy_hash, password or "")
    except (VerificationError, InvalidHashError):
        pass


@dataclass(frozen=True)
class LoginResult:
    user: User | None      # set when the sign-in succeeded
    account: User | None   # the account the identifier names, success or not (for audit)
    reason: str = ""       # for the audit trail only; never shown (one message for all)
    newly_locked: bool = False
    # Shown as "sign-in is not possible right now": a locked account (right password or not),
    # or a name without an account that failed as often (lock_shadow): no account oracle.
    locked: bool = False
    # The place that keeps this account's password cannot be reached: nothing decided, no
    # failure counted; the caller shows "try again shortly" (503 temporarily_unavailable).
    unavailable: bool = False


def authenticate(identifier: str, password: str) -> LoginResult:
    """Check a password. Every failure looks the same to the caller and costs one argon2
    verification, including unknown and locked accounts (no user or password oracle)."""
    account = find_by_login(identifier)
    try:
        if account is None:
            account = verifiers.resolve(identifier)  # e.g. first sign-in of a directory user
        delegate = verifiers.for_user(account)
    except verifiers.PasswordServiceUnavailable:
        return LoginResult(None, account, "password_service_unavailable", unavailable=True)
    if delegate is not None and account is not None:
        return _authenticate_elsewhere(delegate, account, identifier, password)
    ok = verify_password(account, password)
    if account is None:
        return LoginResult(None, None, "unknown", locked=lock_shadow.register_failure(identifier))
    if account.disabled:
        return LoginResult(None, account, "disabled",
                           locked=lock_shadow.register_failure(identifier))
    if lockout.is_locked(account):
        return LoginResult(None, account, "locked", locked=True)
    if not ok:
        failure = lockout.register_failure(account)
        if failure is None:
            return LoginResult(None, account, "locked", locked=True)
        return LoginResult(None, account, "bad_password", failure.newly_locked,
                           locked=failure.newly_locked)
    db.session.refresh(account)
    if lockout.is_locked(account):  # locked by a concurrent attempt while we verified
        return LoginResult(None, account, "locked", locked=True)
    # The failure count is reset only when the whole sign-in (second factor included)
    # succeeds: a correct password must not wipe out failed code guesses.
    if passwords.temporary_expired(account):
        return LoginResult(None, account, "temporary_expired")
    return LoginResult(account, account, "ok")


def _authenticate_elsewhere(delegate: verifiers.PasswordVerifier, account: User,
                            identifier: str, password: str) -> LoginResult:
    """An account whose password another place checks: our own disabled state, lockout and
    throttles come first, so a locked or disabled account sends that place no password at all
    (the IdP cannot be used to lock out or guess at the directory beyond our policy). It
    costs one argon2 verification all the same, so that the time of an answer does not tell
    which names are accounts of that place."""
    _same_work_as_a_local_password(password)
    if account.disabled:
        return LoginResult(None, account, "disabled",
                           locked=lock_shadow.register_failure(identifier))
    if lockout.is_locked(account):
        return LoginResult(None, account, "locked", locked=True)
    try:
        verdict = delegate.verify(account, password or "")
    except verifiers.PasswordServiceUnavailable:
        return LoginResult(None, account, "password_service_unavailable", unavailable=True)
    if verdict is verifiers.Verdict.THROTTLED:
        return LoginResult(None, account, f"{delegate.name}_throttled", locked=True)
    if verdict is not verifiers.Verdict.OK:
        reason = "bad_password" if verdict is verifiers.Verdict.WRONG else \
            f"{delegate.name}_refused"
        failure = lockout.register_failure(account)
        if failure is None:
            return LoginResult(None, account, "locked", locked=True)
        return LoginResult(None, account, reason, failure.newly_locked,
                           locked=failure.newly_locked)
    db.session.refresh(account)
    if lockout.is_locked(account) or account.disabled:  # changed while the directory answered
        return LoginResult(None, account, "locked", locked=True)
    return LoginResult(account, account, "ok")


def create_user(*, username: str, email: str, role: str, password: str | None = None,
                npi: str | None = None, given_name: str = "", family_name: str = "",
                temporary: bool = False, facility: str | None = None,
                department: str | None = None, license_state: str | None = None) -> User:
    username = username.strip().lower()
    if not USERNAME_RE.fullmatch(username):
        raise AccountError("username: 3-64 characters, letters, digits, '.', '_' or '-'")
    if role not in policy().roles:
        raise AccountError(f"role: must be one of {', '.join(sorted(policy().roles))}")
    if npi is not None and not NPI_RE.fullmatch(npi):
        raise AccountError("npi: must be exactly 10 digits")
    if "@" not in email or len(email) > 254:
        raise AccountError("email: not a valid address")
    clash = User.username == username
    if npi:
        clash = or_(clash, User.npi == npi)
    taken = db.session.execute(select(func.count()).select_from(User).where(clash)).scalar_one()
    if taken:
        raise AccountError("an account with this username or NPI already exists")
    user = User(username=username, email=email.strip(), role=role, npi=npi,
                given_name=given_name, family_name=family_name, facility=facility,
                department=department, license_state=license_state,
                must_change_password=temporary)
    db.session.add(user)
    db.session.flush()
    if password is not None:
        passwords.set_password(user, password, temporary=temporary)
    return user
