"""What the dashboard shows each role, fetched from the EHR API with the user's access token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests

ROLE_LABELS = {"physician": "Physician", "nurse_practitioner": "Nurse practitioner",
               "admin_staff": "Administrative staff", "admin": "IdP administrator"}


@dataclass(frozen=True)
class Widget:
    key: str
    title: str
    path: str                          # EHR API path with its query
    columns: tuple[tuple[str, str], ...]  # (field, heading)
    empty: str


APPOINTMENTS = Widget("appointments", "Today's appointments", "/api/appointments",
                      (("time", "Time"), ("patient", "Patient"), ("type", "Visit"),
                       ("clinician", "Clinician")), "No appointments today.")
PENDING_LABS = Widget("pending-labs", "Pending lab results", "/api/labs?status=pending",
                      (("id", "Order"), ("patient", "Patient"), ("test", "Test"),
                       ("status", "Status")), "No pending lab results.")
LABS = Widget("labs", "Lab results", "/api/labs",
              (("id", "Order"), ("patient", "Patient"), ("test", "Test"), ("status", "Status"),
               ("result", "Result")), "No lab results.")
MESSAGES = Widget("messages", "Patient messages", "/api/messages",
                  (("id", "Message"), ("patient", "Patient"), ("subject", "Subject")),
                  "No new messages.")
BILLING = Widget("billing", "Billing", "/api/billing",
                 (("claim", "Claim"), ("patient", "Patient"), ("payer", "Payer"),
                  ("amount", "Amount (USD)"), ("status", "Status")), "No open claims.")

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
        return Panel(widget, error="The EHR cannot be reached right now.")
    if response.status_code == 401:
        return Panel(widget, error="The EHR did not accept your sign-in. Sign out and in again.")
    if response.status_code == 403:
        return Panel(widget, error="Your role or the access you granted does not include this.")
    if response.status_code != 200:
        return Panel(widget, error=f"The EHR answered {response.status_code}. Try again later.")
    try:
        items = response.json()["items"]
    except (ValueError, KeyError, TypeError):
        return Panel(widget, error="The EHR sent an answer the portal cannot read.")
    return Panel(widget, rows=[i for i in items if isinstance(i, dict)])


def load(api_base: str, access_token: str, roles: list[str]) -> list[Panel]:
    return [fetch(api_base, access_token, w) for w in widgets_for(roles)]
