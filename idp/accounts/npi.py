"""The NPI check digit (CMS): Luhn over the 9 digits prefixed with 80840, the ISO 7812 issuer
prefix of the US health industry."""

from __future__ import annotations

NPI_PREFIX = "80840"


def _luhn_sum(digits: str, double_first: bool) -> int:
    """Luhn sum of `digits` read right to left; the first digit read is doubled or not."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        digit = int(char) * (2 if (i % 2 == 0) == double_first else 1)
        total += digit - 9 if digit > 9 else digit
    return total


def npi_with_check_digit(base: str) -> str:
    """The 10-digit NPI for 9 digits: Luhn check digit computed over the 80840 prefix."""
    if len(base) != 9 or not base.isascii() or not base.isdigit():
        raise ValueError("an NPI base is 9 digits")
    return base + str((10 - _luhn_sum(NPI_PREFIX + base, True) % 10) % 10)


def is_valid_npi(value: str) -> bool:
    """Exactly 10 ASCII digits whose last is the check digit of the first nine."""
    if not isinstance(value, str) or len(value) != 10 or not value.isascii() \
            or not value.isdigit():
        return False
    return _luhn_sum(NPI_PREFIX + value, False) % 10 == 0
