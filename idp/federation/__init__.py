"""Federation: the hospital's directory proves who a person is (upstream OpenID Providers in upstream/, LDAP and Active Directory in ldap/)."""
