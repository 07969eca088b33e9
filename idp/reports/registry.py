"""The reports' extension point: a report is a function registered with @report(name, title,
columns, ranged=...). It gets a Range (or None for point-in-time reports) and returns rows
(dicts keyed by the columns). A feature registers its own reports from its install (the
onboarding work: idp.onboarding.reports) without importing the reports service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Range:
    start: datetime
    end: datetime

    def as_dict(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


Builder = Callable[[Range | None], list[dict[str, Any]]]


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    columns: tuple[str, ...] | Callable[[], tuple[str, ...]]  # a callable: known when run
    ranged: bool
    build: Builder
    description: str = ""


REPORTS: dict[str, Spec] = {}


def report(name: str, title: str, columns: tuple[str, ...] | Callable[[], tuple[str, ...]], *,
           ranged: bool, description: str = "") -> Callable[[Builder], Builder]:
    """Register a report builder under `name`."""
    def decorator(func: Builder) -> Builder:
        REPORTS[name] = Spec(name, title, columns, ranged, func, description)
        return func
    return decorator
