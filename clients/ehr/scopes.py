"""The EHR's scope names and what each API endpoint demands: one place, read by the EHR's API
and pages and by the portal (which asks for these scopes)."""

from __future__ import annotations

from dataclasses import dataclass

PATIENTS_READ = "ehr.patients.read"
APPOINTMENTS_READ = "ehr.appointments.read"
LABS_READ = "ehr.labs.read"
BILLING_READ = "ehr.billing.read"
PRESCRIPTIONS_WRITE = "ehr.prescriptions.write"

READ_SCOPES = (PATIENTS_READ, APPOINTMENTS_READ, LABS_READ, BILLING_READ)
IDENTITY_SCOPES = ("openid", "profile", "email", "roles", "npi")

CLINICAL_ROLES = frozenset({"physician", "nurse_practitioner"})
STAFF_ROLES = CLINICAL_ROLES | {"admin_staff"}


@dataclass(frozen=True)
class Rule:
    """An endpoint needs this scope in the token and, when set, one of these roles."""

    scope: str
    roles: frozenset[str] | None = None


RULES = {
    "patients": Rule(PATIENTS_READ, STAFF_ROLES),
    "appointments": Rule(APPOINTMENTS_READ, STAFF_ROLES),
    "messages": Rule(PATIENTS_READ, CLINICAL_ROLES),  # patient messages belong to the record
    "labs": Rule(LABS_READ, CLINICAL_ROLES),
    "billing": Rule(BILLING_READ, frozenset({"admin_staff"})),
}


def scope_string(*scopes: str) -> str:
    return " ".join(dict.fromkeys(scopes))
