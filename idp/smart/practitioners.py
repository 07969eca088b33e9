"""fhirUser resolved, not assumed: the IdP asks the EHR's FHIR server which Practitioner
resource a clinician is, by NPI, and names that resource in fhirUser.

The IdP acts as a SMART backend-services client of the FHIR server: an access token of its own
(client `idp-practitioner-directory`, scope `system/Practitioner.rs`, no user, revoked right
after the call) for `GET <FHIR base>/Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|<NPI>`
through the outbound client. One match: its logical id is stored and fhirUser is
`<FHIR base>/Practitioner/<id>`. None or several: no fhirUser and a warning for the operator
(the log, the nightly command's output, and an alert on the admin console), because naming
the wrong Practitioner would hand an app another clinician's identity. A FHIR server that
cannot be asked keeps the last answer.

Runs after an onboarding approval (idp.core.events ACCOUNT_APPROVED, after the response) and
nightly for every active clinician (`idp smart resolve-practitioners`, cron)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import current_app, has_request_context
from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy
from idp.core import outbound
from idp.core.after_response import run_after_response
from idp.extensions import db
from idp.security import alerts
from idp.smart.models import PractitionerLink
from idp.smart.service import FHIR_ID, OwnClient, fhir_base, fhir_search

log = logging.getLogger("idp.smart.practitioners")

DIRECTORY_CLIENT_ID = "idp-practitioner-directory"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
SCOPE = "system/Practitioner.rs"


class DirectoryError(Exception):
    """The FHIR server could not be asked or answered nonsense; str() is safe to show."""


@dataclass(frozen=True)
class Resolution:
    username: str
    npi: str
    status: str                    # resolved | missing | ambiguous | unavailable
    practitioner_id: str | None
    matches: int = 0
    error: str | None = None

    @property
    def warning(self) -> str | None:
        if self.status == "resolved":
            return None
        if self.status == "missing":
            return (f"{self.username}: no Practitioner with NPI {self.npi} on the FHIR server; "
                    "no fhirUser")
        if self.status == "ambiguous":
            return (f"{self.username}: {self.matches} Practitioners share NPI {self.npi} on the "
                    "FHIR server; no fhirUser until the EHR merges them")
        return f"{self.username}: the FHIR server could not be asked ({self.error})"

    def as_dict(self) -> dict[str, Any]:
        return {"username": self.username, "npi": self.npi, "status": self.status,
                "practitioner_id": self.practitioner_id, "matches": self.matches,
                "warning": self.warning}


def _search(npi: str, http_get: Callable[..., Any]) -> list[str]:
    """The logical ids of the Practitioners the FHIR server has for this NPI."""
    query = urlencode({"identifier": f"{NPI_SYSTEM}|{npi}"})
    bundle = fhir_search(OwnClient(DIRECTORY_CLIENT_ID), None, SCOPE, "smart_backend_services",
                         f"{fhir_base()}/{policy().smart.fhir_user_type}?{query}", http_get,
                         policy().smart.directory_timeout, DirectoryError, actor="system:smart")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise DirectoryError("the answer is not a FHIR Bundle")
    found = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or \
                resource.get("resourceType") != policy().smart.fhir_user_type:
            continue
        if (entry.get("search") or {}).get("mode", "match") != "match":
            continue   # included resources, OperationOutcome: not matches
        pid = resource.get("id")
        if not isinstance(pid, str) or not FHIR_ID.fullmatch(pid):
            raise DirectoryError("a Practitioner without a valid logical id")
        if _has_npi(resource, npi):
            found.append(pid)
    return sorted(set(found))


def _has_npi(resource: dict[str, Any], npi: str) -> bool:
    """The server's search is not trusted alone: the resource must carry the NPI."""
    return any(isinstance(i, dict) and i.get("system") == NPI_SYSTEM and i.get("value") == npi
               for i in resource.get("identifier") or [])


def resolve(user: User, http_get: Callable[..., Any] | None = None) -> Resolution:
    """Ask the FHIR server about this clinician and store the answer (commits)."""
    if not user.npi:
        raise ValueError("the account has no NPI")
    http_get = http_get or current_app.extensions.get("smart.http_get") or \
        outbound.client().get
    link = db.session.get(PractitionerLink, user.id)
    now = clock.now()
    try:
        ids = _search(user.npi, http_get)
    except DirectoryError as exc:
        if link is not None:
            link.last_error, link.last_error_at = str(exc)[:200], now
            db.session.commit()
        found = Resolution(user.username, user.npi, "unavailable",
                           link.practitioner_id if link and link.npi == user.npi and
                           link.status == "resolved" else None, error=str(exc))
        log.warning("fhirUser: %s", found.warning)
        return found
    status = "resolved" if len(ids) == 1 else "missing" if not ids else "ambiguous"
    pid = ids[0] if status == "resolved" else None
    if link is None:
        link = PractitionerLink(user_id=user.id)
        db.session.add(link)
    changed = (link.status, link.practitioner_id, link.npi) != (status, pid, user.npi)
    link.npi, link.status, link.practitioner_id, link.matches = user.npi, status, pid, len(ids)
    link.resolved_at, link.last_error, link.last_error_at = now, None, None
    if changed:
        audit.record("smart.practitioner_resolved", user_id=user.id, actor="system:smart",
                     status=status, practitioner_id=pid, matches=len(ids))
        if status != "resolved":   # on the admin console's alerts, once per change
            alerts.raise_alert("fhir_user_unresolved", user_id=user.id, actor="system:smart",
                               detail={"status": status, "matches": len(ids)})
    db.session.commit()
    found = Resolution(user.username, user.npi, status, pid, len(ids))
    if found.warning:
        log.warning("fhirUser: %s", found.warning)
    return found


def resolve_all(http_get: Callable[..., Any] | None = None) -> list[Resolution]:
    """Nightly: every active account with an NPI."""
    users = db.session.execute(select(User).where(User.npi.is_not(None),
                                                  User.disabled.is_(False))
                               .order_by(User.id)).scalars().all()
    return [resolve(user, http_get) for user in users]


def practitioner_id(user: User) -> str | None:
    """The stored Practitioner logical id, while it was resolved for the current NPI."""
    if not user.npi or user.id is None:
        return None
    link = db.session.get(PractitionerLink, user.id)
    if link is None or link.status != "resolved" or link.npi != user.npi:
        return None
    return link.practitioner_id


def fhir_user(user: User) -> str | None:
    """fhirUser: the absolute URL of the clinician's resolved Practitioner, else None."""
    pid = practitioner_id(user)
    return f"{fhir_base()}/{policy().smart.fhir_user_type}/{pid}" if pid else None


def on_account_approved(user_id: int) -> None:
    """An onboarding approval: resolve once the approval has committed (after the response);
    outside a request the nightly run catches up."""
    if not has_request_context():
        return

    def job() -> None:
        user = db.session.get(User, user_id)
        if user is not None and user.npi:
            resolve(user)
    run_after_response(job)
