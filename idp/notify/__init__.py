"""Outbound notifications: email over SMTP (SMS senders arrive with MFA)."""
