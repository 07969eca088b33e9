"""Moved to idp.mfa.factors.otp_code; this name stays for idp.accounts (the phone change)."""

from idp.mfa.factors.otp_code import (  # noqa: F401
    PhoneError,
    SendResult,
    mask,
    normalise_phone,
    send,
    verify,
)
