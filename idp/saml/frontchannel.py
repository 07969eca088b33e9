"""Front-channel single logout: a service provider whose metadata lists an HTTP-Redirect or
HTTP-POST SingleLogoutService and no SOAP one hears of the end of an SSO session only through
the browser of that session. When the browser's own session ends in a logout it asked for
(our /logout, an SP's LogoutRequest at /saml/slo), the browser is taken from SP to SP: a
signed LogoutRequest to each, RelayState naming the chain; each SP answers to /saml/slo with
its LogoutResponse and the chain goes on (/saml/slo/continue); at the end the browser goes
where the logout would have gone (the relying party's post-logout URI, our signed-out page,
or the LogoutResponse owed to the SP that asked).

The chain lives in the browser's signed Flask session (`idp_flow` cookie, SameSite=Lax): an
SP's answer by form POST from another site comes without it, so /saml/slo answers it with a
redirect (a top-level GET, which carries the cookie) to /saml/slo/continue. Sessions ended
outside such a request (timeouts, sign-out everywhere, the CLI) have no browser to use: their
front-channel SPs are recorded as not told (`saml.logout_sent` outcome `no_soap_endpoint`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from flask import g, has_request_context, session, url_for

from idp.audit import service as audit
from idp.context import policy
from idp.core.after_response import run_after_response
from idp.extensions import db
from idp.lazymodule import lazy
from idp.saml.models import SamlParticipant, SamlServiceProvider

if TYPE_CHECKING:
    from idp.saml import service
else:  # pysaml2 is loaded when an SP is first spoken to (idp.lazymodule)
    service = lazy("idp.saml.service")

CHAIN = "saml_slo_chain"       # Flask session: the chain under way
PENDING = "saml_front_channel"  # g: {sid: [participant ids]} of sessions ended in this request


def stash(row: SamlParticipant, deliver: Any) -> None:
    """Keep this participant of an ended session for the browser's chain (on_session_ended);
    one not taken by a chain before the response is delivered as any other (`deliver`)."""
    pending = g.get(PENDING)
    if pending is None:
        pending = g.setdefault(PENDING, {})
        run_after_response(partial(_not_taken, pending, deliver))
    pending.setdefault(row.sid, []).append(row.id)


def _not_taken(pending: dict[str, list[str]], deliver: Any) -> None:
    for ids in pending.values():
        for pid in ids:
            deliver(pid, commit=True)


def browser_sid() -> str | None:
    """The id of this request's SSO session (ended or not), if any."""
    sso = g.get("sso_session") if has_request_context() else None
    return sso.id if sso is not None else None


def start(sid: str, then: dict[str, Any]) -> str | None:
    """Begin a chain through this ended session's front-channel SPs, if it has any: the URL
    of its first step. `then`: {"url": U | None} or {"sp": entityID, "id": request ID,
    "relay_state": RS} (the LogoutResponse owed to the SP that asked)."""
    pending = g.get(PENDING) or {}
    limit = policy().saml.max_front_channel_logouts
    stops = pending.get(sid, [])[:limit]
    if not stops:
        return None
    pending[sid] = pending[sid][limit:]  # beyond the limit: not told, as after a timeout
    nonce = secrets.token_urlsafe(12)
    session[CHAIN] = {"nonce": nonce, "sid": sid, "stops": stops, "then": then}
    return url_for("saml.slo_continue", chain=nonce)


def relay(sid: str, then: str | None) -> str | None:
    """idp.core.logout_relays: after our /logout ended the browser's session."""
    return start(sid, {"url": then})


@dataclass(frozen=True)
class Step:
    """The browser's next step: to an SP (`answer`), or the end of the chain (`then`)."""

    answer: service.LogoutAnswer | None = None
    then: dict[str, Any] | None = None
    sid: str | None = None


def next_step(nonce: str | None) -> Step | None:
    """The next SP of the chain this browser is on (its LogoutRequest, RelayState = the
    chain), or the chain's end; None when the browser is on no such chain."""
    chain = session.get(CHAIN)
    if not isinstance(chain, dict) or not nonce or \
            not secrets.compare_digest(str(chain.get("nonce", "")), nonce):
        return None
    while chain["stops"]:
        pid = chain["stops"].pop(0)
        session[CHAIN] = chain
        answer = service.front_channel_logout(pid, chain["nonce"])
        row = db.session.get(SamlParticipant, pid)
        audit.record("saml.logout_sent", actor="idp", user_id=row.user_id if row else None,
                     sp=row.sp_entity_id if row else None,
                     outcome="front_channel" if answer else "gone")
        if answer is not None:
            return Step(answer=answer)
    session.pop(CHAIN, None)
    return Step(then=chain["then"], sid=chain["sid"])


def owed_response(then: dict[str, Any]) -> service.LogoutAnswer | None:
    """The LogoutResponse owed to the SP whose LogoutRequest began the chain, if any."""
    sp = db.session.get(SamlServiceProvider, then.get("sp") or "")
    if sp is None:
        return None
    return service.logout_response(sp, service.answered_later(sp, then["id"]),
                                   then.get("relay_state"))
