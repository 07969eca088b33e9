"""SCIM 2.0 service provider (RFC 7643, 7644) for HR provisioning: Entra ID, Okta."""
