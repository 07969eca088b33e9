"""Optional GeoIP (IDP_GEOIP_DB: a MaxMind GeoLite2/GeoIP2 City or Country database).

When configured, sign-in rows and alerts show the country (and city, with a City database) of
an address, and the alert rules may treat a country as the "network" (policies/alerts.toml
network_by_country). When unset, lookup() answers None and nothing else changes. The reader
is opened once per process per file (read-only, memory-mapped, safe to share across threads).
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path

from idp.context import settings

_lock = threading.Lock()
_readers: dict[Path, object] = {}


@dataclass(frozen=True)
class Place:
    country_code: str | None
    country: str | None
    city: str | None

    def __str__(self) -> str:
        return ", ".join(part for part in (self.city, self.country or self.country_code) if part)


def _reader(path: Path) -> object:
    reader = _readers.get(path)
    if reader is None:
        import maxminddb

        with _lock:
            reader = _readers.get(path)
            if reader is None:
                reader = _readers[path] = maxminddb.open_database(str(path))
    return reader


def enabled() -> bool:
    return settings().geoip_db is not None


def lookup(ip: str | None) -> Place | None:
    """Where an address is, per the configured database; None when unknown or not configured."""
    path = settings().geoip_db
    if path is None or not ip:
        return None
    try:
        ipaddress.ip_address(ip)
        record = _reader(path).get(ip)
    except ValueError:  # not an address, or an IPv6 address in an IPv4-only database
        return None
    if not isinstance(record, dict):
        return None
    country = record.get("country") or record.get("registered_country") or {}
    names = country.get("names") or {}
    city = (record.get("city") or {}).get("names") or {}
    place = Place(country.get("iso_code"), names.get("en"), city.get("en"))
    return place if (place.country_code or place.country or place.city) else None
