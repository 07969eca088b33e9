"""Compliance reports (/admin/reports, `idp reports`)."""
