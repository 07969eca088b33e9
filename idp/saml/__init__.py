"""SAML 2.0 identity provider (issue 25): metadata, SP-initiated and IdP-initiated single
sign-on and single logout, over pysaml2 (saml2.server.Server with Debian's xmlsec1)."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# pysaml2 7.5 names cryptography's CFB mode where cryptography 44+ no longer keeps it, and
# warns at import: on every `idp` command's stderr and in every log. We never use CFB (AES-GCM
# and RSA-SHA256 only), so that one warning is silenced, once, before any module imports it.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import saml2.cryptography.symmetric  # noqa: F401
