"""NPI check digit (Luhn over 80840 + the 9 digits, as CMS defines it) and state license rules."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from idp.accounts import licenses
from idp.accounts.npi import is_valid_npi, npi_with_check_digit
from idp.config import POLICY_DIR
from idp.policy import load_policy

# Published examples: 1234567893 is the NPI of CMS's own check-digit example; the others are
# NPIs that appear in CMS and vendor documentation as valid test numbers.
VALID = ["1234567893", "1245319599", "1679576722", "1003000126", "1801952031"]


@pytest.mark.parametrize("npi", VALID)
def test_published_npis_are_valid(npi: str):
    assert is_valid_npi(npi)
    assert npi_with_check_digit(npi[:9]) == npi


@pytest.mark.parametrize("npi", [
    "1234567890", "1234567891", "1234567892", "1234567894", "1234567899",  # wrong check digit
    "1234567839",   # two digits swapped (Luhn catches adjacent transpositions)
    "123456789",    # 9 digits
    "12345678933",  # 11 digits
    "12345678a3",   # a letter
    "１２３４５６７８９３",  # full-width digits: isdigit() but not ASCII
    "",
])
def test_invalid_npis_are_refused(npi: str):
    assert not is_valid_npi(npi)


def test_check_digit_needs_the_80840_prefix():
    """A plain Luhn over the 10 digits (no prefix) would accept 1234567897, not 1234567893."""
    assert not is_valid_npi("1234567897")
    assert npi_with_check_digit("123456789") == "1234567893"
    assert npi_with_check_digit("987654321") == "9876543213"


def test_npi_base_must_be_nine_digits():
    for bad in ("12345678", "1234567890", "12345678x"):
        with pytest.raises(ValueError):
            npi_with_check_digit(bad)


STATES = load_policy(POLICY_DIR).onboarding.license_states
TODAY = date(2026, 11, 25)
NEXT_YEAR = TODAY + timedelta(days=365)


def test_every_state_and_territory_is_listed():
    assert len(STATES) == 56  # 50 states, DC, AS, GU, MP, PR, VI
    for code in ("CA", "NY", "DC", "PR", "GU", "VI", "AS", "MP"):
        assert code in STATES


def test_a_good_license_has_no_problems():
    assert licenses.problems(STATES, "CA", "A123456", NEXT_YEAR, TODAY) == {}
    assert licenses.problems(STATES, "NY", "123456", NEXT_YEAR, TODAY) == {}
    assert licenses.problems(STATES, "tx", "n 1234", NEXT_YEAR, TODAY) == {}  # normalized


def test_state_specific_format_is_enforced_with_an_example():
    found = licenses.problems(STATES, "NY", "A12345", NEXT_YEAR, TODAY)
    assert set(found) == {"license_number"}
    assert "New York" in found["license_number"] and "123456" in found["license_number"]


def test_generic_pattern_where_a_state_has_none():
    assert licenses.problems(STATES, "VT", "042-0012345", NEXT_YEAR, TODAY) == {}
    assert "license_number" in licenses.problems(STATES, "VT", "#!", NEXT_YEAR, TODAY)


def test_unknown_state_missing_number_and_expiry():
    found = licenses.problems(STATES, "ZZ", "", None, TODAY)
    assert set(found) == {"license_state", "license_number", "license_expires"}


@pytest.mark.parametrize("expires", [TODAY, TODAY - timedelta(days=1), date(2000, 1, 1)])
def test_expired_license_is_refused(expires: date):
    found = licenses.problems(STATES, "CA", "A123456", expires, TODAY)
    assert set(found) == {"license_expires"} and "expired" in found["license_expires"]


def test_license_expiring_tomorrow_is_accepted():
    assert licenses.problems(STATES, "CA", "A123456", TODAY + timedelta(days=1), TODAY) == {}
