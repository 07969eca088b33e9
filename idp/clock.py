"""The one source of the current time. Tests patch `idp.clock.now`."""

from datetime import UTC, datetime


def now() -> datetime:
    """Timezone-aware UTC now."""
    return datetime.now(UTC)


def timestamp() -> int:
    """Seconds since the epoch, from `now()` so tests that move time move this too."""
    return int(now().timestamp())


def aware(value: datetime | None) -> datetime | None:
    """Treat naive datetimes read back from SQLite as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def from_timestamp(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)
