"""A small, entirely FICTITIOUS data set: made-up people (realistic names, DEMO- record
numbers, no real person or record behind any of them)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

PATIENTS = (
    {"mrn": "DEMO-0001", "name": "Eleanor Whitfield", "birth_date": "1980-01-01", "sex": "X"},
    {"mrn": "DEMO-0002", "name": "Priya Natarajan", "birth_date": "1975-02-02", "sex": "F"},
    {"mrn": "DEMO-0003", "name": "Marcus Bell", "birth_date": "1962-03-03", "sex": "M"},
    {"mrn": "DEMO-0004", "name": "Aiko Tanaka", "birth_date": "1990-04-04", "sex": "F"},
    {"mrn": "DEMO-0005", "name": "Daniel Okonkwo", "birth_date": "2001-05-05", "sex": "M"},
    {"mrn": "DEMO-0006", "name": "Ruth Delacroix", "birth_date": "1955-06-06", "sex": "X"},
)
_NAMES = {p["mrn"]: p["name"] for p in PATIENTS}
# The EHR's practitioner directory (its FHIR Practitioner resources): logical ids of the EHR's
# own, never the NPI (the IdP finds them by the NPI identifier: idp/smart/practitioners.py).
PRACTITIONERS = (
    {"id": "pr-5f1c9a2e", "npi": "1234567893", "name": "Alex Rivera"},
    {"id": "pr-0b77d4c1", "npi": "9876543213", "name": "Sam Chen"},
)

# (minutes after 08:00, MRN, visit type, clinician)
_SCHEDULE = (
    (60, "DEMO-0001", "Annual physical", "dr.rivera"),
    (90, "DEMO-0003", "Follow-up: blood pressure", "dr.rivera"),
    (150, "DEMO-0002", "Telehealth check-in", "np.chen"),
    (240, "DEMO-0005", "New patient visit", "dr.rivera"),
    (300, "DEMO-0004", "Medication review", "np.chen"),
)
LABS = (
    {"id": "LAB-101", "mrn": "DEMO-0003", "test": "Lipid panel", "status": "pending",
     "result": None},
    {"id": "LAB-102", "mrn": "DEMO-0001", "test": "HbA1c", "status": "final",
     "result": "5.4 %"},
    {"id": "LAB-103", "mrn": "DEMO-0005", "test": "Complete blood count", "status": "pending",
     "result": None},
    {"id": "LAB-104", "mrn": "DEMO-0002", "test": "TSH", "status": "final",
     "result": "2.1 mIU/L"},
)
MESSAGES = (
    {"id": "MSG-201", "mrn": "DEMO-0002", "subject": "Question about my new prescription"},
    {"id": "MSG-202", "mrn": "DEMO-0004", "subject": "Can I move my appointment?"},
)
BILLING = (
    {"claim": "CLM-301", "mrn": "DEMO-0001", "payer": "Acme Fictional Insurance",
     "amount": "120.00", "status": "submitted"},
    {"claim": "CLM-302", "mrn": "DEMO-0003", "payer": "Pretend Health Plan",
     "amount": "85.50", "status": "denied: missing authorization"},
    {"claim": "CLM-303", "mrn": "DEMO-0006", "payer": "Self-pay", "amount": "40.00",
     "status": "paid"},
)


def _with_name(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "patient": _NAMES[row["mrn"]]}


def care_team(username: str | None) -> set[str]:
    """The MRNs of the patients a clinician cares for (on their schedule)."""
    return {mrn for _, mrn, _, clinician in _SCHEDULE if clinician == username}


def practitioners() -> list[dict[str, Any]]:
    return [dict(p) for p in PRACTITIONERS]


def patients() -> list[dict[str, Any]]:
    return [dict(p) for p in PATIENTS]


def appointments(day: date | None = None) -> list[dict[str, Any]]:
    """Today's clinic schedule (the fake schedule repeats every day)."""
    start = datetime.combine(day or date.today(), time(8, 0))
    return [_with_name({"time": (start + timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M"),
                        "mrn": mrn, "type": kind, "clinician": who})
            for m, mrn, kind, who in _SCHEDULE]


def labs(status: str | None = None) -> list[dict[str, Any]]:
    return [_with_name(lab) for lab in LABS if status in (None, lab["status"])]


def messages() -> list[dict[str, Any]]:
    return [_with_name(m) for m in MESSAGES]


def billing() -> list[dict[str, Any]]:
    return [_with_name(b) for b in BILLING]


# A draft prescription waiting for a signature: a made-up medicine for a made-up patient.
PRESCRIPTION_DRAFT = {"id": "RX-9001", "mrn": "DEMO-0003", "medication": "Placebocillin 250 mg",
                      "directions": "One tablet by mouth twice a day for 7 days",
                      "quantity": "14 tablets", "refills": "0"}


def prescription_draft() -> dict[str, Any]:
    return _with_name(PRESCRIPTION_DRAFT)


# Controlled-substance drafts (DEA schedules II and IV): made-up medicines for a made-up
# patient, signed together in one EPCS ceremony. The IdP shows every field at the ceremony
# (21 CFR 1311.140(a)(3)); their ids form the reference (binding_message).
CONTROLLED_DRAFTS = (
    {"id": "RX-9002", "mrn": "DEMO-0001", "medication": "Fictionalcodone 5 mg",
     "drug": "Fictionalcodone hydrochloride", "strength": "5 mg", "dosage_form": "tablet",
     "schedule": "II", "directions": "One tablet by mouth every 6 hours as needed for pain",
     "quantity": "12 (twelve) tablets", "refills": 0},
    {"id": "RX-9003", "mrn": "DEMO-0001", "medication": "Imaginazepam 1 mg",
     "drug": "Imaginazepam", "strength": "1 mg", "dosage_form": "tablet", "schedule": "IV",
     "directions": "One tablet by mouth at bedtime as needed for sleep",
     "quantity": "10 (ten) tablets", "refills": 1},
)
PATIENT_ADDRESSES = {"DEMO-0001": "42 Harbor Lane, Springfield, IL 62704"}
# The prescribers' DEA registrations and practice addresses (by NPI), as the EHR keeps them.
PRESCRIBERS = {
    "1234567893": {"dea_number": "AR1234563",
                   "address": "Demo Clinic, 100 Main Street, Springfield, IL 62701"},
    "9876543213": {"dea_number": "MC9876547",
                   "address": "Demo Clinic, 100 Main Street, Springfield, IL 62701"},
}


def controlled_drafts() -> list[dict[str, Any]]:
    return [{**_with_name(d), "address": PATIENT_ADDRESSES[d["mrn"]]}
            for d in CONTROLLED_DRAFTS]


def prescriber(npi: object) -> dict[str, str] | None:
    """DEA number and practice address of the prescriber with this NPI."""
    found = PRESCRIBERS.get(npi) if isinstance(npi, str) else None
    return dict(found) if found else None
