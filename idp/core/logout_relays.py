"""Front-channel stops of a logout at the IdP. Some participants of an ended SSO session can
hear of its end only through the browser (a SAML service provider whose metadata lists an
HTTP-Redirect or HTTP-POST SingleLogoutService and no SOAP one). When a logout view has ended
the browser's own session, it asks this registry for the browser's first stop; a feature
(idp.saml) registers a relay at install time, takes the browser through its stops and at the
end sends it where the logout would have gone: `then`, the relying party's post-logout
redirect URI (checked by the logout already), or None for the IdP's signed-out page
(`signed_out_page`, with idp.core.logout_offers). The logout knows no feature."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app, redirect, render_template
from werkzeug.wrappers import Response

from idp.core.logout_offers import LogoutOffer

EXTENSION = "idp.logout_relays"

# (the ended session's id, then) -> the URL of the browser's first stop, or None (no stop)
Relay = Callable[[str, "str | None"], "str | None"]


def register(app: Flask, relay: Relay) -> None:
    relays = app.extensions.setdefault(EXTENSION, [])
    if relay not in relays:
        relays.append(relay)


def first_stop(sso_session_id: str, then: str | None) -> str | None:
    """Where the browser goes first, if a relay has stops for this ended session (the first
    relay that has takes it; it comes back to `then` itself)."""
    for relay in current_app.extensions.get(EXTENSION, ()):
        url = relay(sso_session_id, then)
        if url:
            return url
    return None


def signed_out_page(offers: list[LogoutOffer], then: str | None) -> Response | str:
    """The end of a logout: the signed-out page offering the other sign-outs (idp.core.
    logout_offers) and a way on to `then`, or straight to `then`, or the plain page."""
    if offers:
        return render_template("oidc/logged_out.html", offers=offers, continue_url=then)
    if then:
        return redirect(then)
    return render_template("oidc/logged_out.html")
