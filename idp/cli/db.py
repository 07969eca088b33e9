"""`idp db`: the database schema."""

from __future__ import annotations

import click
from alembic.runtime.migration import MigrationContext
from flask import current_app
from flask_migrate import upgrade

from idp import enable_migrations
from idp.cli.common import emit, json_option, with_app
from idp.extensions import db as sqla


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@json_option
@with_app(ensure_keys=False)
def db_upgrade(as_json: bool) -> None:
    """Apply every migration (safe to run again)."""
    enable_migrations(current_app)
    upgrade(revision="heads")  # every branch, should parallel work leave more than one
    with sqla.engine.connect() as conn:
        heads = sorted(MigrationContext.configure(conn).get_current_heads())
    head = ",".join(heads)
    emit(as_json, {"revision": head}, f"database at revision {head}")
