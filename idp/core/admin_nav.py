"""The admin console's navigation: every admin page shows the same nav (admin/_nav.html),
built from the entries the console and the features add here when they are installed.

A feature with an admin page adds one entry in its install(app):

    admin_nav.add(app, admin_nav.NavEntry("saml_admin.index", _l("SAML"), lambda: rules().roles))

`roles` is asked on every page (a policy value may change with a reload); an entry whose
endpoint the app does not have (a feature switched off) is never shown."""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

from flask import Flask, current_app

EXTENSION = "admin_nav"


@dataclass(frozen=True)
class NavEntry:
    endpoint: str  # url_for() name of the page
    label: object  # a str or a lazy_gettext string (shown in the request's language)
    roles: Callable[[], Container[str]]  # the roles that may open the page
    order: int = 100  # position in the nav, lowest first (ties: in the order added)


def add(app: Flask, entry: NavEntry) -> None:
    entries: list[NavEntry] = app.extensions.setdefault(EXTENSION, [])
    if all(e.endpoint != entry.endpoint for e in entries):
        entries.append(entry)


def entries_for(role: str | None) -> list[NavEntry]:
    """The entries a holder of `role` may open, in nav order."""
    if role is None:
        return []
    endpoints = current_app.view_functions
    entries: list[NavEntry] = current_app.extensions.get(EXTENSION, [])
    return sorted((e for e in entries if e.endpoint in endpoints and role in e.roles()),
                  key=lambda e: e.order)


@dataclass(frozen=True)
class Tile:
    """A count on the console's dashboard (admin/index.html), linking to the page that lists
    what it counts: e.g. pending applications, locked accounts, open alerts."""

    endpoint: str  # the page listing what is counted
    label: object  # str or lazy_gettext string
    count: Callable[[], int]  # asked when the dashboard is shown (one small query)
    roles: Callable[[], Container[str]]
    order: int = 100
    attention: bool = True  # a count above zero asks for someone's action (shown in red)
    args: tuple[tuple[str, str], ...] = ()  # url_for() arguments (a filter of that page)


def add_tile(app: Flask, tile: Tile) -> None:
    tiles: list[Tile] = app.extensions.setdefault(EXTENSION + ".tiles", [])
    if all((t.endpoint, t.args) != (tile.endpoint, tile.args) for t in tiles):
        tiles.append(tile)


def tiles_for(role: str | None) -> list[tuple[Tile, int]]:
    """The dashboard tiles a holder of `role` may see, with their counts, in order."""
    if role is None:
        return []
    endpoints = current_app.view_functions
    tiles: list[Tile] = current_app.extensions.get(EXTENSION + ".tiles", [])
    return [(t, t.count()) for t in sorted(tiles, key=lambda t: t.order)
            if t.endpoint in endpoints and role in t.roles()]
