"""`idp backup` and `idp restore` (see idp/ops/backup.py and README, Operations)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from idp.audit.service import verify
from idp.cli.common import emit, json_option, with_app
from idp.context import settings
from idp.extensions import db
from idp.ops.backup import BackupError, backup, restore


@click.command("backup")
@click.option("--to", "target", required=True, type=click.Path(path_type=Path),
              help="a new or empty directory (created mode 0700)")
@json_option
@with_app(ensure_keys=False)
def backup_command(target: Path, as_json: bool) -> None:
    """Back up the database and the key directory together, with a manifest."""
    try:
        manifest = backup(settings(), db.engine, target)
    except BackupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    head = manifest["audit_head"]
    emit(as_json, {"path": str(target), **manifest},
         f"backup in {target}: {manifest['database']} at {','.join(manifest['revisions'])}, "
         f"{len(manifest['keys'])} key files, audit head {head['seq'] if head else '-'}")


@click.command("restore")
@click.option("--from", "source", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
@with_app(ensure_keys=False)
def restore_command(source: Path, as_json: bool) -> None:
    """Restore a backup into an empty database and key directory (keys first), then check
    the audit chain. Run `idp audit verify` again before starting the IdP on it."""
    try:
        manifest = restore(settings(), db.engine, source)
    except BackupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    intact, count, broken = verify()
    emit(as_json, {"restored": str(source), "audit_intact": intact, "audit_events": count,
                   "audit_first_broken_seq": broken, **manifest},
         f"restored {source}: {manifest['database']} at {','.join(manifest['revisions'])}; "
         f"audit chain {'intact' if intact else f'BROKEN at event {broken}'} ({count} events)")
    if not intact:
        sys.exit(1)
