"""Break-glass emergency access: a clinician opens records outside their care team in an
emergency, after signing in again and saying why; security staff are alerted at once, the
entitlement expires on its own, and a privacy officer reviews every episode
(policies/breakglass.toml; docs/healthcare.md)."""
