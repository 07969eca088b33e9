"""State license checks: the jurisdiction is a US state, DC or territory (policies/licenses.toml),
the number has that jurisdiction's shape (or the generic one), the expiry date is in the future."""

from __future__ import annotations

import re
from datetime import date

from idp import clock
from idp.accounts.models import User
from idp.core.i18n import gettext as _
from idp.policy import LicenseState


def normalize_number(number: str) -> str:
    """As compared and stored: upper-case, without spaces."""
    return "".join((number or "").split()).upper()


def problems(states: dict[str, LicenseState], state: str, number: str, expires: date | None,
             today: date) -> dict[str, str]:
    """A readable message per field that is wrong (empty: the license is acceptable)."""
    found: dict[str, str] = {}
    spec = states.get((state or "").strip().upper())
    if spec is None:
        found["license_state"] = _("Choose the state or territory that issued your license.")
    number = normalize_number(number)
    if not number:
        found["license_number"] = _("Enter your license number.")
    elif spec is not None and not re.fullmatch(spec.pattern, number):
        found["license_number"] = _("This does not look like a %(state)s license number "
                                     "(for example %(example)s).", state=spec.name,
                                     example=spec.example)
    if expires is None:
        found["license_expires"] = _("Enter the date your license expires.")
    elif expires <= today:
        found["license_expires"] = _("This license has expired: the expiry date must "
                                     "be in the future.")
    return found


def credentials_complete(user: User) -> bool:
    """A verified NPI and an unexpired license on the account (what onboarding's verifier
    records, and what provisioning from HR or the directory must find before a clinical role)."""
    return bool(user.npi and user.license_number and user.license_expires
                and user.license_expires > clock.now().date())
