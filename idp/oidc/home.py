"""The "home" relying party (policies/session.toml home_client_id, home_path): where people go
after a flow that began outside any application, such as the approval mail or a finished
password reset. Falls back to the IdP's own sign-in when no such client is registered."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import select

from idp.context import policy, settings
from idp.extensions import db
from idp.oidc.models import Client


def home_url() -> str:
    rules = policy().session
    fallback = f"{settings().issuer}/login"
    if not rules.home_client_id:
        return fallback
    client = db.session.execute(select(Client).where(
        Client.client_id == rules.home_client_id)).scalar_one_or_none()
    if client is None or client.disabled or not client.redirect_uris:
        return fallback
    parts = urlsplit(str(client.redirect_uris[0]))
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return fallback
    return f"{parts.scheme}://{parts.netloc}{rules.home_path}"


def home_name() -> str | None:
    """The home relying party's name, for a link text ("Go to Provider Portal")."""
    rules = policy().session
    if not rules.home_client_id:
        return None
    client = db.session.execute(select(Client).where(
        Client.client_id == rules.home_client_id)).scalar_one_or_none()
    return None if client is None or client.disabled else client.client_name
