"""CSP `form-action`: forms may post to this site and to registered relying-party URIs only.

Chromium applies form-action to every redirect that follows a form submission, and a sign-in
form's post ends in a redirect to the relying party (login -> /authorize -> redirect_uri), as
does the logout confirmation (-> post_logout_redirect_uri). So the directive lists 'self' and
the origins of every enabled client's registered redirect and post-logout URIs: an injected
form cannot post a user's input anywhere else. Read on every HTML page (one small SELECT; pages
are not the hot path): a cached list would make a client registered on another node fail its
first sign-ins until the cache expired (Chromium blocks the final redirect).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from idp.extensions import db
from idp.oidc.models import Client

LOOPBACK = ("127.0.0.1", "[::1]", "localhost")


def sources_for(uris: list[str], loopback_any_port: bool) -> set[str]:
    """CSP source expressions allowing a form's navigation to each URI."""
    found = set()
    for uri in uris:
        parts = urlsplit(uri)
        if not parts.scheme or any(c in uri for c in " ;,'\""):
            continue
        if parts.scheme not in ("http", "https"):
            found.add(f"{parts.scheme}:")  # private-use scheme of a native app (RFC 8252)
        elif parts.netloc:
            host = parts.netloc.rsplit("@", 1)[-1]
            if loopback_any_port and parts.scheme == "http" and parts.hostname and \
                    host.rsplit(":", 1)[0] in LOOPBACK:
                found.add(f"http://{host.rsplit(':', 1)[0]}:*")
            else:
                found.add(f"{parts.scheme}://{host}")
    return found


def directive() -> str:
    """The form-action directive; '' when the clients cannot be read (the database is down:
    no sign-in can finish then anyway, and the page must still render)."""
    try:
        rows = db.session.execute(select(Client.redirect_uris, Client.post_logout_redirect_uris,
                                         Client.loopback_any_port)
                                  .where(Client.disabled.is_(False))).all()
    except SQLAlchemyError:
        db.session.rollback()
        return ""
    sources: set[str] = set()
    for redirects, logouts, any_port in rows:
        sources |= sources_for([*(redirects or []), *(logouts or [])], bool(any_port))
    return " ".join(["form-action 'self'", *sorted(sources)])
