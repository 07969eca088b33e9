"""Provider registry look-ups (NPPES). The result is shown to the verifier; it decides nothing.

Two adapters behind one interface, chosen by IDP_NPI_REGISTRY:
- `offline:<file>`: a local CSV in the NPPES data dissemination layout (the monthly file CMS
  publishes), for sites without internet access and for tests;
- `nppes` (or `nppes:<url>`): the NPPES API, version 2.1. A network failure, a timeout or an
  answer that is not what the API sends is "registry unavailable", never an error page.
Unset: no check (the reviewer sees "not configured"). The API is called through the outbound
client (idp/core/outbound.py): a registry mirror on an internal address needs the operator's
allow-list."""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

from idp.core import bounded_json, outbound

NPI = "NPI"
ENTITY_TYPE = "Entity Type Code"
LAST_NAME = "Provider Last Name (Legal Name)"
FIRST_NAME = "Provider First Name"
ORGANIZATION = "Provider Organization Name (Legal Business Name)"
STATE = "Provider Business Practice Location Address State Name"
TAXONOMY = "Healthcare Provider Taxonomy Code_1"
PRIMARY_TAXONOMY = "Healthcare Provider Primary Taxonomy Switch_1"
DEACTIVATION = "NPI Deactivation Date"
REACTIVATION = "NPI Reactivation Date"


@dataclass(frozen=True)
class RegistryResult:
    """What the registry says about one NPI. `available` False: it could not be asked."""

    source: str
    available: bool
    found: bool = False
    name: str = ""
    name_matches: bool | None = None
    taxonomy: str = ""
    state: str = ""
    deactivated: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProviderRegistry(Protocol):
    name: str

    def lookup(self, npi: str, given_name: str, family_name: str) -> RegistryResult:
        """The registry's record of `npi`, compared with the applicant's legal name."""


def _simple(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", plain.lower())


def name_matches(given: str, family: str, reg_first: str, reg_last: str) -> bool:
    """Same family name and first name, ignoring case, spaces, hyphens and accents."""
    return bool(_simple(family)) and _simple(family) == _simple(reg_last) and \
        _simple(given) == _simple(reg_first)


class OfflineRegistry:
    """Reads the NPPES dissemination CSV (header row, one provider per row)."""

    name = "NPPES file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def lookup(self, npi: str, given_name: str, family_name: str) -> RegistryResult:
        try:
            with self.path.open(newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    if (row.get(NPI) or "").strip() == npi:
                        return self._result(row, given_name, family_name)
        except (OSError, csv.Error, UnicodeDecodeError):
            return RegistryResult(self.name, False, note="registry unavailable")
        return RegistryResult(self.name, True, note="NPI not in the registry")

    def _result(self, row: dict[str, str], given: str, family: str) -> RegistryResult:
        first, last = row.get(FIRST_NAME, "").strip(), row.get(LAST_NAME, "").strip()
        org = row.get(ORGANIZATION, "").strip()
        deactivated = bool(row.get(DEACTIVATION, "").strip()) and \
            not row.get(REACTIVATION, "").strip()
        individual = row.get(ENTITY_TYPE, "").strip() == "1"
        return RegistryResult(
            self.name, True, True, name=f"{first} {last}".strip() if individual else org,
            name_matches=name_matches(given, family, first, last) if individual else False,
            taxonomy=row.get(TAXONOMY, "").strip(), state=row.get(STATE, "").strip(),
            deactivated=deactivated,
            note="" if individual else "the NPI belongs to an organization")


class NppesRegistry:
    """The NPPES API: GET <url>?version=2.1&number=<npi>."""

    name = "NPPES API"

    def __init__(self, url: str, timeout: float, http: outbound.OutboundClient) -> None:
        self.url = url
        self.timeout = timeout
        self.http = http

    def lookup(self, npi: str, given_name: str, family_name: str) -> RegistryResult:
        unavailable = RegistryResult(self.name, False, note="registry unavailable")
        try:
            response = self.http.get(self.url, params={"version": "2.1", "number": npi},
                                     timeout=self.timeout)
            if response.status_code != 200:
                return unavailable
            data = bounded_json.loads(response.content)
        except outbound.OutboundRefused as exc:
            return RegistryResult(self.name, False, note="registry unavailable: its address "
                                  f"is refused by the outbound policy ({exc.reason})")
        except (requests.RequestException, ValueError):
            return unavailable
        if not isinstance(data, dict) or "Errors" in data:
            return unavailable
        results = data.get("results")
        if not isinstance(results, list):
            return unavailable
        # A deactivated NPI is no longer returned by the API: "not found" then.
        if not results or not isinstance(results[0], dict):
            return RegistryResult(self.name, True, note="NPI not in the registry "
                                                        "(unknown or deactivated)")
        record = results[0]
        basic = record.get("basic") or {}
        first, last = str(basic.get("first_name", "")), str(basic.get("last_name", ""))
        location = next((a for a in record.get("addresses") or []
                         if isinstance(a, dict) and a.get("address_purpose") == "LOCATION"), {})
        taxonomies = [t for t in record.get("taxonomies") or [] if isinstance(t, dict)]
        primary = next((t for t in taxonomies if t.get("primary")), taxonomies[0]
                       if taxonomies else {})
        individual = record.get("enumeration_type") == "NPI-1"
        return RegistryResult(
            self.name, True, True,
            name=f"{first} {last}".strip() if individual else
            str(basic.get("organization_name", "")),
            name_matches=name_matches(given_name, family_name, first, last) if individual
            else False,
            taxonomy=" ".join(p for p in (str(primary.get("code", "")),
                                          str(primary.get("desc", ""))) if p),
            state=str(location.get("state", "")),
            deactivated=str(basic.get("status", "A")) != "A",
            note="" if individual else "the NPI belongs to an organization")


def configured(spec: str | None, timeout: float, default_url: str,
               http: outbound.OutboundClient | None = None) -> ProviderRegistry | None:
    """The adapter IDP_NPI_REGISTRY names, or None (no check). The API adapter calls out
    through `http` (default: the current app's outbound client)."""
    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "offline":
        return OfflineRegistry(Path(rest))
    return NppesRegistry(rest or default_url, timeout, http or outbound.client())
