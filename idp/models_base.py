"""Column helpers shared by every domain's models."""

from datetime import datetime

from sqlalchemy import DateTime, TypeDecorator
from sqlalchemy.engine import Dialect

from idp import clock


class UTCDateTime(TypeDecorator):
    """Timezone-aware datetimes on SQLite and PostgreSQL alike (stored as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return clock.aware(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return clock.aware(value)
