"""Relying parties of the IdP: the provider portal and the EHR, plus the dev stack launcher."""
