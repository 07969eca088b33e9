"""LDAP user federation plugs into credential verification (idp.accounts.verifiers): linked
accounts' passwords are checked by the directory. create_app installs it while
policies/federation.toml [ldap] has `enabled = true`; `idp ldap sync` works either way."""

from __future__ import annotations

from flask import Flask

from idp.accounts import verifiers
from idp.federation.ldap.service import LdapVerifier


def install(app: Flask) -> None:
    verifiers.register(app, LdapVerifier())
