"""The account gates, enforced once for every route (before_request, first of all hooks).

A browser whose live SSO session still owes a step (a forced change of a temporary, expired or
"this wasn't me" password, then today's security acknowledgment: idp.accounts.gates) reaches
nothing but that step: every route is gated unless ALLOW below names it and says why. A route
added later is therefore gated without anyone remembering to call a check;
tests/integration/test_gates_everywhere.py walks the whole URL map to prove it and pins this
allow-list, so widening it is a reviewed change.

The same hook asks for a recent sign-in (policies/mfa.toml `reauth_window`) before the routes
marked `@recent_sign_in`: changing one's sign-in methods must not be possible from a session
left open hours ago.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from flask import Flask, current_app, redirect, request, url_for
from werkzeug.wrappers import Response

from idp import clock
from idp.accounts import gates
from idp.audit import service as audit
from idp.context import policy
from idp.extensions import db
from idp.sessions import service as sessions

View = TypeVar("View", bound=Callable[..., object])

_PROTOCOL = ("a protocol endpoint for clients and resource servers: authenticated by client "
             "credentials, a bearer token or nothing, never by the browser's SSO session")
_SCIM = ("SCIM provisioning (RFC 7644): authenticated by a provisioning bearer token "
         "(idp scim tokens create), never by the browser's SSO session")
_PUBLIC_DOCUMENT = "a public document (no account, no session is read)"
_SIGN_IN = ("part of signing in (second factor or passkey): the gates come after a sign-in, "
            "and a new sign-in replaces the session that owes them")

# endpoint -> why it is reachable while a gate is owed. Keep it small; each entry says why.
ALLOW: dict[str, str] = {
    "static": "static files (stylesheets, scripts) that the gate pages themselves need",
    "accounts.required_password_change": "the gate page itself (a new password)",
    "accounts.acknowledge": "the gate page itself (the daily acknowledgment)",
    "accounts.login": "signing in again, possibly as someone else, replaces the session",
    "oidc.logout": "signing out must always be possible",
    "saml.slo": "SAML single logout: signing out must always be possible",
    "saml.slo_continue": ("SAML front-channel logout, after the session ended: signing out "
                          "must always be possible"),
    "saml.metadata": _PUBLIC_DOCUMENT,
    "saml.sso": ("receives a SAML AuthnRequest and keeps it for saml.resume; nothing is "
                 "issued there"),
    "saml.launch": "IdP-initiated SAML sign-in: goes to saml.resume, which checks the gates",
    "saml.resume": ("checks the same gates itself (the /authorize checks: "
                    "idp.oidc.interaction.checks SIGN_IN) and answers IsPassive with NoPassive "
                    "to the service provider"),
    "oidc.authorize": ("checks the same gates itself, after login and step-up, and answers "
                       "prompt=none with interaction_required to the relying party "
                       "(OIDC Core §3.1.2.6) instead of a redirect to a page"),
    "mfa.challenge": _SIGN_IN,
    "mfa.use_recovery": _SIGN_IN,
    "mfa.webauthn_options": _SIGN_IN,
    "mfa.webauthn_verify": _SIGN_IN,
    "mfa.passkey_options": _SIGN_IN,
    "mfa.passkey_verify": _SIGN_IN,
    "mfa.show_recovery_codes": ("shows, once, the recovery codes generated a moment ago at a "
                                "sign-in's first enrollment; they live only in this browser's "
                                "flow cookie and would be lost"),
    "upstream.start": _SIGN_IN + " (at an upstream identity provider)",
    "upstream.callback": _SIGN_IN + " (the upstream identity provider's answer)",
    "upstream.choose": _SIGN_IN + " (an upstream identity proves or applies for an account)",
    "upstream.backchannel_logout": _PROTOCOL + " (an upstream provider's logout token)",
    "oidc.token": _PROTOCOL,
    "device.authorization": _PROTOCOL,
    "oidc.userinfo": _PROTOCOL,
    "oidc.introspect": _PROTOCOL,
    "oidc.revoke": _PROTOCOL,
    "oidc.pushed_authorization_request": _PROTOCOL + " (RFC 9126: the client pushes its "
                                         "request before any user is involved)",
    "registration.register": _PROTOCOL,
    "registration.read": _PROTOCOL,
    "registration.replace": _PROTOCOL,
    "registration.remove": _PROTOCOL,
    "smart.register_launch": _PROTOCOL,
    "metrics": _PROTOCOL,
    **{f"scim.{name}": _SCIM for name in (
        "service_provider_config_view", "resource_types_view",
        "resource_type_view", "schemas_view", "schema_view", "users_list", "user",
        "users_create", "users_replace", "users_patch", "users_delete", "groups_list", "group",
        "groups_create", "groups_replace", "groups_patch", "groups_delete", "unknown")},
    "oidc.healthz": _PUBLIC_DOCUMENT,
    "oidc.readyz": _PUBLIC_DOCUMENT,
    "oidc.discovery": _PUBLIC_DOCUMENT,
    "oidc.jwks": _PUBLIC_DOCUMENT,
    "openapi.openapi": _PUBLIC_DOCUMENT,
    "smart.configuration": _PUBLIC_DOCUMENT,
    "smart.style": _PUBLIC_DOCUMENT,
    "udap.metadata": _PUBLIC_DOCUMENT + " (FAST Security IG: UDAP server metadata)",
}


def recent_sign_in(view: View) -> View:
    """Mark a route that needs an authentication within policies/mfa.toml `reauth_window`."""
    view.recent_sign_in = True  # type: ignore[attr-defined]
    return view


def _view() -> Callable[..., object] | None:
    return current_app.view_functions.get(request.endpoint or "")


def this_page() -> str:
    """The path and query of this GET, to come back to. The gates run before the hook that
    refuses a non-UTF-8 query string (idp.web.security), so such a query is dropped here rather
    than decoded (request.full_path would raise UnicodeDecodeError: a 500)."""
    try:
        return request.full_path.rstrip("?")
    except UnicodeDecodeError:
        return request.path


def _back() -> str:
    """Where to come back after the step: this page for a GET, the page the form was on (when
    it is ours) for anything else, else the account page."""
    if request.method == "GET":
        return this_page()
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc == request.host and referrer.path.startswith("/"):
        return referrer.path + (f"?{referrer.query}" if referrer.query else "")
    return url_for("accounts.account")


def enforce() -> Response | None:
    """before_request: the owed step first, then a recent sign-in where the route asks."""
    endpoint = request.endpoint
    if endpoint is None or endpoint in ALLOW:
        return None
    recent = getattr(_view(), "recent_sign_in", False)
    sso = sessions.current() if request.cookies.get(sessions.cookie_name()) else None
    status = 302 if request.method == "GET" else 303
    if sso is None:
        # No live session: each route handles an anonymous visitor itself, except those that
        # need a recent sign-in, which send it to sign in.
        return redirect(url_for("accounts.login", next=_back()), status) if recent else None
    step = gates.pending(sso.user)
    if step:
        if request.method != "GET":
            # Not a page view: someone tried to act past the gate; the security team sees it
            # (committed here: this hook answers the request, no view runs after it).
            audit.record("gate.bypass_refused", user_id=sso.user_id, endpoint=endpoint,
                         method=request.method, owed=step.rsplit(".", 1)[-1])
            db.session.commit()
        return redirect(url_for(step, next=_back()), status)
    if recent and (clock.now() - sso.auth_time).total_seconds() > policy().mfa.reauth_window:
        return redirect(url_for("accounts.login", next=_back(), reauth=1), status)
    return None


def install(app: Flask) -> None:
    """Run before every other before_request hook (CSRF included): a refused request gets the
    gate, not a form error."""
    app.before_request_funcs.setdefault(None, []).insert(0, enforce)
