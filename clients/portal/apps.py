"""The portal's application tiles: the SAML service providers the signed-in user may open,
learnt from the IdP's `GET <issuer>/saml/apps` (docs/saml.md) with the user's access token.
Each tile links to the IdP's IdP-initiated sign-in, `<issuer>/saml/launch?sp=<entityID>`:
the IdP's SSO session signs the user in there without a password prompt."""

from __future__ import annotations

from dataclasses import dataclass

import requests

from clients.i18n import gettext as _


@dataclass(frozen=True)
class Tile:
    name: str
    url: str


@dataclass(frozen=True)
class Tiles:
    items: list[Tile]
    error: str | None = None


def load(issuer: str, access_token: str) -> Tiles:
    """The tiles, or an error sentence; none at all when the IdP has no SAML (404)."""
    try:
        response = requests.get(f"{issuer}/saml/apps", timeout=5,
                                headers={"Authorization": f"Bearer {access_token}",
                                         "Accept": "application/json"})
    except requests.RequestException:
        return Tiles([], _("Your applications cannot be listed right now."))
    if response.status_code == 404:
        return Tiles([])
    if response.status_code != 200:
        return Tiles([], _("The identity provider did not list your applications."))
    try:
        found = response.json()["apps"]
    except (ValueError, KeyError, TypeError):
        found = None
    if not isinstance(found, list):
        return Tiles([], _("The identity provider sent a list the portal cannot read."))
    launch = f"{issuer}/saml/launch?"
    tiles = [Tile(str(app["name"]), app["launch_url"]) for app in found
             if isinstance(app, dict) and isinstance(app.get("launch_url"), str)
             and app["launch_url"].startswith(launch) and app.get("name")]
    return Tiles(tiles)
