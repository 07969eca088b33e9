"""Pages a feature adds to a person's account ("Linked sign-in identities"): the account page
lists what this registry holds and knows no feature. A feature registers at install time."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app, url_for

EXTENSION = "idp.account_pages"


@dataclass(frozen=True)
class AccountPage:
    endpoint: str      # the page's endpoint (url_for)
    label: str         # the link's text, a msgid the template translates
    description: str   # what is there, a msgid likewise


def register(app: Flask, page: AccountPage) -> None:
    pages = app.extensions.setdefault(EXTENSION, [])
    if page not in pages:
        pages.append(page)


def pages() -> list[tuple[str, AccountPage]]:
    """(url, page) of every registered page."""
    return [(url_for(p.endpoint), p) for p in current_app.extensions.get(EXTENSION, ())]
