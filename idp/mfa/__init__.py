"""Second factors: one module per factor (totp, codes for sms/email, webauthn, recovery) behind
the small interface in base.py; flow.py runs enrollment, challenge and step-up."""
