"""What the dashboard shows each role, fetched from the EHR API with the user's access token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests
from flask_babel.speaklater import LazyString

from clients.i18n import gettext as _
from clients.i18n import lazy_gettext as _l

ROLE_LABELS = {"physician": _l("Physician"), "nurse_practitioner": _l("Nurse practitioner"),
               "admin_staff": _l("Administrative staff"), "admin": _l("IdP administrator")}


@dataclass(frozen=True)
class Widget:
    key: str
    title: LazyString
    path: str                          # EHR API path with its query
    columns: tuple[tuple[str, LazyString], ...]  # (field, heading)
    empty: LazyString


APPOINTMENTS = Widget("appointments", _l("Today's appointments"), "/api/appointments",
                      (("time", _l("Time")), ("patient", _l("Patient")), ("type", _l("Visit")),
                       ("clinician", _l("Clinician"))), _l("No appointments today."))
PENDING_LABS = Widget("pending-labs", _l("Pending lab results"), "/api/labs?status=pending",
                      (("id", _l("Order")), ("patient", _l("Patient")), ("test", _l("Test")),
                       ("status", _l("Status"))), _l("No pending lab results."))
LABS = Widget("labs", _l("Lab results"), "/api/labs",
              (("id", _l("Order")), ("patient", _l("Patient")), ("test", _l("Test")),
               ("status", _l("Status")), ("result", _l("Result"))), _l("No lab results."))
MESSAGES = Widget("messages", _l("Patient messages"), "/api/messages",
                  (("id", _l("Message")), ("patient", _l("Patient")),
                   ("subject", _l("Subject"))), _l("No new messages."))
BILLING = Widget("billing", _l("Billing"), "/api/billing",
                 (("claim", _l("Claim")), ("patient", _l("Patient")), ("payer", _l("Payer")),
                  ("amount", _l("Amount (USD)")), ("status", _l("Status"))),
                 _l("No open claims."))

WIDGETS_BY_ROLE = {
    "physician": (APPOINTMENTS, PENDING_LABS),
    "nurse_practitioner": (MESSAGES, LABS),
    "admin_staff": (BILLING,),
}


@dataclass
class Panel:
    widget: Widget
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def widgets_for(roles: list[str]) -> list[Widget]:
    seen: dict[str, Widget] = {}
    for role in roles:
        for widget in WIDGETS_BY_ROLE.get(role, ()):
            seen.setdefault(widget.key, widget)
    return list(seen.values())


def fetch(api_base: str, access_token: str, widget: Widget) -> Panel:
    try:
        response = requests.get(f"{api_base}{widget.path}", timeout=5,
                                headers={"Authorization": f"Bearer {access_token}",
                                         "Accept": "application/json"})
    except requests.RequestException:
        return Panel(widget, error=_("The EHR cannot be reached right now."))
    if response.status_code == 401:
        return Panel(widget, error=_("The EHR did not accept your sign-in. Sign out and in again."))
    if response.status_code == 403:
        return Panel(widget, error=_("Your role or the access you granted does not include this."))
    if response.status_code != 200:
        return Panel(widget, error=_("The EHR answered %(status)s. Try again later.",
                                       status=response.status_code))
    try:
        items = response.json()["items"]
    except (ValueError, KeyError, TypeError):
        return Panel(widget, error=_("The EHR sent an answer the portal cannot read."))
    return Panel(widget, rows=[i for i in items if isinstance(i, dict)])


def load(api_base: str, access_token: str, roles: list[str]) -> list[Panel]:
    return [fetch(api_base, access_token, w) for w in widgets_for(roles)]
