"""Server-side SSO sessions."""
