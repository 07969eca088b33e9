"""CSP `form-action`: forms may post to this site and to registered relying-party URIs only.

Chromium applies form-action to every redirect that follows a form submission, and a sign-in
form's post ends in a redirect to the relying party (login -> /authorize -> redirect_uri), as
does the logout confirmation (-> post_logout_redirect_uri). So the directive lists 'self' and
the origins of every enabled client's registered redirect and post-logout URIs: an injected
form cannot post a user's input anywhere else. The list is never cached: a cached list made a
client registered on another node fail its first sign-ins until the cache expired (Chromium
blocks the final redirect). A page of a sign-in for one relying party lists only that client's
URIs, from the client registrations' cache that /authorize itself validates against (no
statement); any other HTML page reads every enabled client's URIs (one small SELECT).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from flask import request, session, url_for
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from idp.extensions import db
from idp.mfa.flow import COOKIE_KEY as FLOW_KEY
from idp.oidc import client_cache
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


def _authorization_clients() -> set[str] | None:
    """The client_ids of the authorization requests this page can lead to, when that is all
    it can lead to: the page is /authorize's own (the consent page), or every `next` it
    carries (its query; on a second-step page, the sign-in under way in the flow cookie) is
    an /authorize request naming its client. None otherwise (another page of ours, a pushed
    or unnamed request, a page answering a form post: a re-shown form may carry another
    `next`, and its body is not read here, which may be refused as too large): then every
    client counts."""
    if request.method != "GET":
        return None
    authorize = url_for("oidc.authorize")
    if request.path == authorize:
        targets = [request.full_path]
    else:
        # The flow cookie's `next` counts on the second step's own pages only: elsewhere (a
        # logout page, say) it may be a sign-in left unfinished that the page has nothing to do
        # with.
        held = session.get(FLOW_KEY) if request.blueprint == "mfa" and FLOW_KEY in session \
            else None
        targets = [t for t in (request.args.get("next"),
                               held.get("next") if isinstance(held, dict) else None) if t]
    if not targets:
        return None
    found: set[str] = set()
    for target in targets:
        parts = urlsplit(target if isinstance(target, str) else "")
        client_ids = parse_qs(parts.query).get("client_id", [])
        if parts.scheme or parts.netloc or parts.path != authorize or len(client_ids) != 1:
            return None
        found.add(client_ids[0])
    return found


def directive() -> str:
    """The form-action directive; '' when the clients cannot be read (the database is down:
    no sign-in can finish then anyway, and the page must still render).

    A page of a sign-in for a relying party (the login form, the second factor, a gate, the
    consent page: see _authorization_clients) lists that client's URIs only, from the client
    registrations' cache (idp.oidc.client_cache): the one /authorize validated the request
    against, where a client registered by another process is read from the database on its
    first use; no other statement. Any other page reads every enabled client's URIs."""
    try:
        client_ids = _authorization_clients()
    except UnicodeDecodeError:  # a query string that is not UTF-8 (its 400 page is answered)
        client_ids = None
    if client_ids is not None:
        sources: set[str] = set()
        try:
            for client_id in client_ids:
                client = client_cache.get(client_id)
                if client is not None and not client.disabled:
                    sources |= sources_for([*(client.redirect_uris or []),
                                            *(client.post_logout_redirect_uris or [])],
                                           bool(client.loopback_any_port))
        except SQLAlchemyError:
            db.session.rollback()
            return ""
        return " ".join(["form-action 'self'", *sorted(sources)])
    try:
        rows = db.session.execute(select(Client.redirect_uris, Client.post_logout_redirect_uris,
                                         Client.loopback_any_port)
                                  .where(Client.disabled.is_(False))).all()
    except SQLAlchemyError:
        db.session.rollback()
        return ""
    sources = set()
    for redirects, logouts, any_port in rows:
        sources |= sources_for([*(redirects or []), *(logouts or [])], bool(any_port))
    return " ".join(["form-action 'self'", *sorted(sources)])
