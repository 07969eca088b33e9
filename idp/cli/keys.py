"""`idp keys`: the signing keys."""

from __future__ import annotations

import click

from idp.cli.common import emit, json_option, with_app
from idp.context import keystore, policy
from idp.keys import jwt


@click.group("keys")
def keys_group() -> None:
    """Signing keys."""


@keys_group.command("list")
@json_option
@with_app()
def keys_list(as_json: bool) -> None:
    rows = [s.__dict__ for s in keystore().statuses()]
    lines = [f"{r['kid']}  {r['alg']}  {r['state']:8}  active_at={r['active_at']:%Y-%m-%d %H:%M}"
             + (f"  unpublish_at={r['unpublish_at']:%Y-%m-%d %H:%M}" if r["unpublish_at"]
                else "") for r in rows]
    emit(as_json, rows, "\n".join(lines))


@keys_group.command("rotate")
@click.option("--delay", type=click.IntRange(0, 30 * 86400), default=None,
              help="seconds before the new key signs (default: policies/keys.toml)")
@click.option("--alg", "algs", multiple=True, type=click.Choice(jwt.ALGORITHMS))
@json_option
@with_app()
def keys_rotate(delay: int | None, algs: tuple[str, ...], as_json: bool) -> None:
    """Publish new keys now; they sign after the delay; old keys stay until tokens expire."""
    delay = policy().keys.activation_delay if delay is None else delay
    created = keystore().rotate(delay, algs or None)
    emit(as_json, {"created": created, "delay": delay},
         f"published {', '.join(created)}; signing in {delay} s")
