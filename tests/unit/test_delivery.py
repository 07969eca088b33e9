"""The back-off every retrying delivery queue shares (idp.core.delivery): retry_delay after
the first failure, doubling, capped at retry_max_delay."""

from __future__ import annotations

from dataclasses import dataclass

from idp.core.delivery import DeliveryReport, backoff


@dataclass(frozen=True)
class Rules:
    retry_delay: int = 30
    retry_max_delay: int = 600
    max_attempts: int = 8


def test_backoff_doubles_from_the_delay_up_to_the_cap():
    waits = [backoff(Rules(), n).total_seconds() for n in range(1, 8)]
    assert waits == [30, 60, 120, 240, 480, 600, 600]


def test_backoff_before_any_failure_is_the_delay():
    assert backoff(Rules(retry_delay=5, retry_max_delay=5), 0).total_seconds() == 5


def test_a_report_counts_and_serialises():
    report = DeliveryReport(attempted=3, delivered=1, failed=2, abandoned=1, pending=4)
    assert report.as_dict() == {"attempted": 3, "delivered": 1, "failed": 2, "abandoned": 1,
                                "pending": 4}
