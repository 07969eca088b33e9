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


# -- assurance ---------------------------------------------------------------------------------
# The IdP's authentication context classes (acr), weakest first: its discovery document lists
# them in this order (acr_values_supported).
ACR_AAL1 = "urn:healthidp:acr:aal1"
ACR_AAL2 = "urn:healthidp:acr:aal2"
ACR_AAL2_PHR = "urn:healthidp:acr:aal2-phr"   # a phishing-resistant factor (WebAuthn)
ACR_EPCS = "urn:healthidp:acr:epcs"           # DEA EPCS signing ceremony (per signature)
ACR_ORDER = (ACR_AAL1, ACR_AAL2, ACR_AAL2_PHR, ACR_EPCS)

# Sensitive actions: signing a prescription needs a phishing-resistant sign-in, the write
# scope, and a prescriber's role.
SIGN_PRESCRIPTION_ACR = ACR_AAL2_PHR
PRESCRIBER_ROLES = CLINICAL_ROLES

# Controlled substances (DEA 21 CFR 1311): a fresh ceremony at every signature (max_age=0) at
# the EPCS acr, whose amr shows the hardware factor (hwk) and a second category (the
# password, or a biometric), by a holder of the two-admin EPCS permission (the `entitlements`
# claim the IdP releases with the roles scope).
SIGN_CONTROLLED_ACR = ACR_EPCS
EPCS_ENTITLEMENT = "epcs"
EPCS_HARDWARE_AMR = "hwk"
EPCS_OTHER_AMR = frozenset({"pwd", "pin", "fpt", "face", "iris"})
EPCS_CEREMONY_MAX_AGE = 300  # seconds from the ceremony (auth_time) to the signature
EPCS_CLOCK_SKEW = 5

def acr_at_least(acr: object, wanted: str) -> bool:
    """Is `acr` as strong as `wanted`? An acr this app does not know counts as too weak."""
    if not isinstance(acr, str) or acr not in ACR_ORDER:
        return False
    return ACR_ORDER.index(acr) >= ACR_ORDER.index(wanted)
