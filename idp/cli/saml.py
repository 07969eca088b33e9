"""`idp saml`: the SAML 2.0 IdP's service providers (design.md contract)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from idp.cli.common import emit, json_option, with_app
from idp.extensions import db
from idp.saml import registry


@click.group("saml")
def saml_group() -> None:
    """SAML 2.0 identity provider (/saml/metadata)."""


@saml_group.group("sps")
def sps_group() -> None:
    """Service providers, registered from their metadata."""


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@sps_group.command("create")
@click.option("--metadata-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--metadata-url")
@click.option("--name", help="shown to administrators and on the portal's tile")
@click.option("--nameid-format", type=click.Choice(["persistent", "email", "transient"]))
@json_option
@with_app()
def sps_create(metadata_file: Path | None, metadata_url: str | None, name: str | None,
               nameid_format: str | None, as_json: bool) -> None:
    """Register an SP (an entityID registered already is updated)."""
    if bool(metadata_file) == bool(metadata_url):
        _fail("give one of --metadata-file or --metadata-url")
    try:
        if metadata_file is not None:
            try:
                xml = metadata_file.read_bytes()
            except OSError as exc:
                _fail(f"cannot read {metadata_file}: {exc.strerror}")
        else:
            xml = registry.fetch(str(metadata_url))
        row, created = registry.register(xml, name=name, nameid_format=nameid_format,
                                         metadata_url=metadata_url, actor="cli")
    except registry.MetadataError as exc:
        _fail(str(exc))
    meta = registry.parse(row.metadata_xml)
    db.session.commit()
    emit(as_json, {"entity_id": row.entity_id, "name": row.name, "created": created,
                   "nameid_format": row.nameid_format,
                   "acs": [a.location for a in meta.acs],
                   "requested_attributes": meta.requested_attributes},
         f"{'registered' if created else 'updated'} {row.entity_id}")


@sps_group.command("list")
@json_option
@with_app()
def sps_list(as_json: bool) -> None:
    rows = [{"entity_id": r.entity_id, "name": r.name, "nameid_format": r.nameid_format,
             "metadata_url": r.metadata_url} for r in registry.all_sps()]
    emit(as_json, rows, "\n".join(f"{r['entity_id']}  {r['name']}" for r in rows) or "none")


@sps_group.command("delete")
@click.argument("entity_id")
@json_option
@with_app()
def sps_delete(entity_id: str, as_json: bool) -> None:
    if not registry.delete(entity_id, actor="cli"):
        _fail(f"no service provider {entity_id}")
    db.session.commit()
    emit(as_json, {"entity_id": entity_id, "deleted": True}, f"deleted {entity_id}")
