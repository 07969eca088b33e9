"""The `idp` command: operators' CLI. Every subcommand takes --json.

One module per group (idp/cli/<group>.py defines `<group>_group`, or `<name>_command` for a
command without subcommands); idp/cli/common.py holds what they share. The console script is
`idp = idp.cli:main`.
"""

from __future__ import annotations

import click

from idp.cli.audit import audit_group
from idp.cli.breakglass import breakglass_group
from idp.cli.clients import clients_group
from idp.cli.db import db_group
from idp.cli.demo import demo_group
from idp.cli.epcs import epcs_group
from idp.cli.keys import keys_group
from idp.cli.ldap import ldap_group
from idp.cli.mfa import mfa_group
from idp.cli.notify import notify_group
from idp.cli.onboarding import onboarding_group
from idp.cli.ops import backup_command, restore_command
from idp.cli.reports import reports_command
from idp.cli.saml import saml_group
from idp.cli.scim import scim_group
from idp.cli.serve import serve_command
from idp.cli.sessions import sessions_group
from idp.cli.smart import smart_group
from idp.cli.udap import udap_group
from idp.cli.upstreams import upstreams_group
from idp.cli.users import users_group


@click.group()
def main() -> None:
    """Healthcare identity provider: operators' commands."""


for _command in (db_group, keys_group, clients_group, users_group, audit_group, mfa_group,
                 serve_command, sessions_group, demo_group, onboarding_group, reports_command,
                 notify_group, backup_command, restore_command, smart_group,
                 breakglass_group, scim_group, ldap_group, epcs_group, saml_group,
                 upstreams_group, udap_group):
    main.add_command(_command)
