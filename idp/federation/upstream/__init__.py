"""Identity brokering to upstream OpenID Providers (Entra ID, Okta, any OIDC provider, another
instance of this IdP): the IdP is a careful relying party of the hospital's directory, and
stays the one issuer its own relying parties trust."""
