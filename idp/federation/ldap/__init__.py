"""Active Directory / LDAP user federation: accounts linked to directory entries, whose
passwords the directory checks by a bind (never stored here), imported and kept in step by
`idp ldap sync`. Settings: policies/federation.toml [ldap] and LDAP_URL, LDAP_BIND_DN,
LDAP_BIND_PASSWORD; an administrator's guide in docs/ldap.md."""
