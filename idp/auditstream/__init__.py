"""Audit streaming: the hash-chained audit trail forwarded, in order and at least once, to the
security team's tools (syslog RFC 5424 over TCP or TLS, CEF lines, FHIR AuditEvent per IHE
BALP). One cursor per sink records the last seq the receiver took; delivery runs after the
response that recorded events and from `idp audit stream deliver` (cron), through the shared
retry machinery (idp.core.delivery). See docs/healthcare.md."""
