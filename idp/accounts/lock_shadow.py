"""Failures against identifiers that name no usable account (unknown, disabled), counted like
a real account's so that the lockout message appears after the same number of tries: whether
"sign-in is not possible right now" is shown then tells nothing about an account's existence.

The counts live in the rate limiter's storage (Redis, or memory), under the limits' key prefix,
keyed by a digest of the identifier; when that storage fails the count is simply 0."""

from __future__ import annotations

import hashlib
import logging

from idp.context import policy, settings
from idp.extensions import limiter

log = logging.getLogger("idp.accounts")


def _key(identifier: str) -> str:
    name = (identifier or "").strip().lower()[:254]
    return f"{settings().ratelimit_prefix}/shadow-lock/" \
           f"{hashlib.sha256(name.encode()).hexdigest()[:32]}"


def register_failure(identifier: str) -> bool:
    """Count one failure for a name without a usable account; True when this failure
    reaches the lockout limit or the name is "locked" already (as a real account would be)."""
    rules = policy().lockout
    try:
        count = limiter.storage.incr(_key(identifier), rules.lock_duration)
    except Exception as exc:  # noqa: BLE001 - a storage outage must not stop sign-in
        log.warning("lockout shadow count unavailable: %s", type(exc).__name__)
        return False
    return count >= rules.max_failures
