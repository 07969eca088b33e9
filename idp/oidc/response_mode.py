"""How the authorization response reaches the client (OAuth 2.0 Multiple Response Type
Encoding Practices; OAuth 2.0 Form Post Response Mode): `query` (the default: a redirect with
the parameters in the query) or `form_post` (a page whose form, submitted by a script of our
own origin, POSTs the parameters to the redirect_uri: the code stays out of the browser's
history, the address bar and Referer headers).

The page's Content-Security-Policy lets that one form reach the redirect_uri's origin
(form-action) and nothing else; the script is a file of ours (script-src 'self'), never
inline. Errors sent back to the client use the mode the request asked for, when valid."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from flask import Response, render_template
from werkzeug.wrappers import Response as BaseResponse

QUERY, FORM_POST = "query", "form_post"
MODES = (QUERY, FORM_POST)


def asked(values: list[str]) -> str:
    """The mode of a request whose response_mode parameter holds `values`: form_post only
    when asked for once and validly (an invalid request is answered in the default mode)."""
    return FORM_POST if values == [FORM_POST] else QUERY


def usable(mode: str, redirect_uri: str) -> bool:
    """form_post needs an http(s) redirect_uri: a browser cannot POST a form to a native
    app's private-use scheme (and must never to javascript: or data:)."""
    return mode != FORM_POST or urlsplit(redirect_uri).scheme in ("http", "https")


def deliver(response: BaseResponse, mode: str, redirect_uri: str | None) -> BaseResponse:
    """The authorization response (a redirect to `redirect_uri` with parameters added)
    answered in `mode`."""
    if mode != FORM_POST or not redirect_uri or response.status_code != 302 or \
            not usable(mode, redirect_uri):
        return response
    location = response.headers.get("Location", "")
    own = set(parse_qsl(urlsplit(redirect_uri).query, keep_blank_values=True))
    params = [p for p in parse_qsl(urlsplit(location).query, keep_blank_values=True)
              if p not in own]
    page = Response(render_template("oidc/form_post.html", action=redirect_uri,
                                    params=params), 200, mimetype="text/html")
    target = urlsplit(redirect_uri)
    page.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; base-uri 'none'; "
        f"frame-ancestors 'none'; form-action {target.scheme}://{target.netloc}")
    return page
