"""Moved to idp.mfa.factors.totp; this name stays for the CLI and the demo seed."""

from idp.mfa.factors.totp import (  # noqa: F401
    ISSUER_NAME,
    matching_step,
    new_secret,
    provisioning_uri,
    qr_svg,
    verify,
)
