"""SAML 2.0 identity provider (issue 25): metadata, SP-initiated and IdP-initiated single
sign-on and single logout, over pysaml2 (saml2.server.Server with Debian's xmlsec1)."""
