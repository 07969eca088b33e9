"""`idp udap`: UDAP trust communities (anchors, intermediates, CRLs) and UDAP clients."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from idp.cli.common import emit, json_option, with_app
from idp.extensions import db
from idp.udap import service


@click.group("udap")
def udap_group() -> None:
    """UDAP / HL7 FAST Security IG (docs/udap.md)."""


@udap_group.group("communities")
def communities_group() -> None:
    """Trust communities: whose certificates may register and authenticate."""


@communities_group.command("list")
@json_option
@with_app()
def communities_list(as_json: bool) -> None:
    """Every community (policies/udap.toml and database) with its anchors."""
    rows = service.describe_communities()
    emit(as_json, rows, "\n".join(
        f"{r['name']}\t{r['source']}\t{len(r['anchors'])} anchor(s), "
        f"{r['intermediates']} intermediate(s), {r['crls']} CRL(s)" for r in rows)
        or "no communities")


@communities_group.command("add")
@click.option("--name", required=True, help="the community's name")
@click.option("--anchor", "anchors", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a root CA certificate file (PEM or DER); repeat for more")
@click.option("--intermediate", "intermediates", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="an intermediate CA certificate file clients may omit from x5c")
@click.option("--crl", "crls", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a CRL file (PEM or DER) of one of the community's CAs")
@json_option
@with_app()
def communities_add(name: str, anchors: tuple[Path, ...], intermediates: tuple[Path, ...],
                    crls: tuple[Path, ...], as_json: bool) -> None:
    """Add a community (or replace its anchors, intermediates and CRLs) in the database."""

    def read(paths: tuple[Path, ...]) -> bytes:
        return b"".join(_pem(p.read_bytes()) for p in paths)

    try:
        row = service.add_community(name, read(anchors), read(intermediates), read(crls),
                                    actor="cli")
    except service.CommunityError as exc:
        db.session.rollback()
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    db.session.commit()
    emit(as_json, {"name": row.name, "anchors": row.anchors_pem.count("BEGIN CERTIFICATE"),
                   "crls": row.crls_pem.count("BEGIN X509 CRL")},
         f"community {row.name} saved")


def _pem(data: bytes) -> bytes:
    """A DER file as PEM (files of one kind are concatenated)."""
    if b"-----BEGIN" in data:
        return data if data.endswith(b"\n") else data + b"\n"
    try:
        return x509.load_der_x509_certificate(data).public_bytes(serialization.Encoding.PEM)
    except ValueError:
        return x509.load_der_x509_crl(data).public_bytes(serialization.Encoding.PEM)


@udap_group.group("clients")
def clients_group() -> None:
    """Clients registered through UDAP."""


@clients_group.command("list")
@json_option
@with_app()
def clients_list(as_json: bool) -> None:
    """Each UDAP client: its iss, community and certificate subject."""
    rows = service.clients()
    emit(as_json, rows, "\n".join(f"{r['client_id']}\t{r['iss']}\t{r['community']}\t"
                                  f"{r['subject']}" for r in rows) or "no UDAP clients")
