"""Password verifiers: who checks an account's password when it is not a local argon2 hash.

A feature that keeps passwords elsewhere (a hospital directory, say) registers one verifier at
install time; the core asks each registered verifier whether it answers for an account and, if
one does, lets it check the password instead of the local hash. The core names no feature: it
only knows this small interface. Our own lockout counting, per-IP/per-account throttles, the
second factor and the gates stay in front of and behind every verifier alike.
"""

from __future__ import annotations

import enum
from typing import Protocol

from flask import Flask, current_app

from idp.accounts.models import User

EXTENSION = "idp.password_verifiers"


class Verdict(enum.Enum):
    OK = "ok"                  # the password is right
    WRONG = "wrong"            # the password is wrong: counts towards our lockout
    REFUSED = "refused"        # the account cannot sign in there (disabled, locked there)
    THROTTLED = "throttled"    # our policy allows no more password checks for now


class PasswordServiceUnavailable(Exception):
    """The place that checks this account's password cannot be reached: the sign-in cannot be
    decided either way (never a failure counted, never a fall-back to a local password).
    Answered as 503 `temporarily_unavailable` (idp.web.outage) when a caller lets it go."""


class PasswordVerifier(Protocol):
    name: str

    def handles(self, user: User) -> bool:
        """True when this verifier, not the local hash, checks the account's password."""

    def verify(self, user: User, password: str) -> Verdict:
        """Check the password (raise PasswordServiceUnavailable when it cannot)."""

    def resolve(self, identifier: str) -> User | None:
        """An account for a sign-in name unknown here (created on first sign-in), or None."""

    def allows(self, user: User) -> bool:
        """Whether the account may sign in at all there (not disabled, locked or removed):
        asked by sign-ins that send no password (passkeys)."""


def register(app: Flask, verifier: PasswordVerifier) -> None:
    app.extensions.setdefault(EXTENSION, []).append(verifier)


def registered() -> list[PasswordVerifier]:
    return list(current_app.extensions.get(EXTENSION, []))


def for_user(user: User | None) -> PasswordVerifier | None:
    if user is None:
        return None
    for verifier in registered():
        if verifier.handles(user):
            return verifier
    return None


def allows(user: User) -> bool:
    """False when the place that keeps the account's password says it cannot sign in."""
    delegate = for_user(user)
    return delegate is None or delegate.allows(user)


def resolve(identifier: str) -> User | None:
    for verifier in registered():
        found = verifier.resolve(identifier)
        if found is not None:
            return found
    return None
