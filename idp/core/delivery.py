"""Retrying delivery queues (the mail outbox, back-channel logout tokens, the outbound queues
to come) share one shape: a row per message with an attempt count and the time of its next
attempt; exponential back-off from policy values; each attempt claimed with one compare-and-set
UPDATE that also schedules the next one, so two nodes (or a node and cron) never make the same
attempt twice, and a node that dies mid-attempt leaves the row due again later; a report of
what a run did.

Each queue keeps what is its own (what "delivered" means, what is erased, what is audited).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, update

from idp.extensions import db


class RetryRules(Protocol):
    """The retry values a queue's policy section carries (policies/mail.toml, backchannel.toml)."""

    @property
    def retry_delay(self) -> int: ...

    @property
    def retry_max_delay(self) -> int: ...

    @property
    def max_attempts(self) -> int: ...


def backoff(rules: RetryRules, attempts: int) -> timedelta:
    """Wait after the n-th failed attempt: retry_delay, doubling, capped at retry_max_delay."""
    return timedelta(seconds=min(rules.retry_delay * 2 ** max(attempts - 1, 0),
                                 rules.retry_max_delay))


@dataclass
class DeliveryReport:
    """What one run of a queue did, and how many messages are still owed after it."""

    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    abandoned: int = 0
    pending: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Claim:
    """An attempt claimed: its number and whether it is the last one the policy allows."""

    attempts: int
    last: bool


def claim(model: Any, row_id: int, seen: int, *, open_: Any, rules: RetryRules,
          now: datetime, delay: timedelta | None = None) -> Claim | None:
    """Claim attempt `seen + 1` of row `row_id` of `model` (a table with `id`, `attempts`
    and `next_attempt_at`) and schedule the next one (after `delay`, else the back-off; none
    after the last), in one compare-and-set UPDATE: it matches only while the row still has
    `seen` attempts and `open_` (a condition: not delivered yet) holds. In the caller's
    transaction, which commits before the attempt is made. None: another process claimed it."""
    attempts = seen + 1
    last = attempts >= rules.max_attempts
    wait = delay if delay is not None else backoff(rules, attempts)
    result = db.session.execute(
        update(model).where(model.id == row_id, model.attempts == seen, open_)
        .values(attempts=attempts, next_attempt_at=None if last else now + wait)
        .execution_options(synchronize_session=False))
    return Claim(attempts, last) if cast("CursorResult[Any]", result).rowcount == 1 else None
