"""Shared web pieces: security headers, error pages."""
