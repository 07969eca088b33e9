"""The built-in checks of /authorize, in their order (BUILTIN): session, prompt=login,
max_age, acr (step-up or unmet), gates, consent. Each is a small function of the Interaction;
the reason codes are the `reason` of the outcomes they answer."""

from __future__ import annotations

from authlib.oidc.core.errors import (
    ConsentRequiredError,
    InteractionRequiredError,
    LoginRequiredError,
)

from idp.oidc.authorize import AuthorizationRequestError
from idp.oidc.interaction.pipeline import (
    CONSENT,
    DENY,
    LOGIN,
    PAGE,
    STEP_UP,
    Check,
    Interaction,
    Outcome,
)

UNMET = ("the requested assurance (acr_values) needs a sign-in method this account has not "
         "set up")


def sign_in(ix: Interaction, reason: str) -> Outcome:
    """Send the user to sign in (login_required under prompt=none). The sign-in is marked
    for prompt=login and max_age, so that a sign-in after the mark satisfies them."""
    if "none" in ix.prompts:
        return Outcome.fail(reason, LoginRequiredError(redirect_uri=ix.redirect_uri))
    return Outcome(LOGIN, reason, mark="login" in ix.prompts or reason == "max_age")


def interactive(ix: Interaction, reason: str, outcome: Outcome) -> Outcome:
    """`outcome` needs the user; under prompt=none the client gets interaction_required."""
    if "none" in ix.prompts:
        return Outcome.fail(reason, InteractionRequiredError(redirect_uri=ix.redirect_uri))
    return outcome


def _signed_in_after_marker(ix: Interaction) -> bool:
    return ix.marker is not None and ix.sso.auth_time.timestamp() >= ix.marker


def session(ix: Interaction) -> Outcome | None:
    """no_session: nobody is signed in in this browser."""
    if ix.login_settled or ix.sso is not None:
        return None
    return sign_in(ix, "no_session")


def prompt_login(ix: Interaction) -> Outcome | None:
    """prompt_login: prompt=login asks for a sign-in after this request was first seen."""
    if ix.login_settled or "login" not in ix.prompts or _signed_in_after_marker(ix):
        return None
    return sign_in(ix, "prompt_login")


def max_age(ix: Interaction) -> Outcome | None:
    """max_age: the sign-in is older than max_age seconds (a sign-in after the marker meets
    it, even max_age=0, which no sign-in could meet by the time the browser comes back)."""
    limit = ix.params.get("max_age")
    if ix.login_settled or limit is None or _signed_in_after_marker(ix):
        return None
    if ix.now - ix.sso.auth_time.timestamp() > int(limit):
        return sign_in(ix, "max_age")
    return None


def acr(ix: Interaction) -> Outcome | None:
    """acr_values above the session's acr: step_up when the account has a factor that
    reaches it, else unmet_acr (unmet_authentication_requirements)."""
    if ix.login_settled:
        return None
    wanted = ix.requested_acr()
    rank = ix.assurance.rank
    if wanted is None or rank(wanted) <= rank(ix.sso.acr):
        return None
    if rank(ix.services.achievable_acr(ix.user)) < rank(wanted):
        return Outcome.fail("unmet_acr", AuthorizationRequestError(
            UNMET, ix.redirect_uri, "unmet_authentication_requirements"))
    return interactive(ix, "step_up", Outcome(STEP_UP, "step_up", acr=wanted))


def gates(ix: Interaction) -> Outcome | None:
    """gate: a step the account owes first (password change, today's acknowledgment)."""
    step = ix.services.pending_gate(ix.user)
    if step is None:
        return None
    return interactive(ix, "gate", Outcome.go("gate", step, next=ix.return_to))


def consent(ix: Interaction) -> Outcome | None:
    """consent_required (the page; consent_required under prompt=none), consent_denied,
    consent_choice (neither Allow nor Deny); an Allow is remembered and the request goes on.
    First-party clients and scopes consented before skip the page unless prompt=consent."""
    user, client, scope = ix.user, ix.client, ix.scope
    if not (ix.consenting or "consent" in ix.prompts) and (
            client.first_party or ix.services.has_consent(user, client, scope)):
        return None
    if "none" in ix.prompts:
        return Outcome.fail("consent_required",
                            ConsentRequiredError(redirect_uri=ix.redirect_uri))
    if not ix.consenting:
        return Outcome(CONSENT, "consent_required")
    if ix.decision == "deny":
        return Outcome(DENY, "consent_denied")
    if ix.decision != "allow":
        return Outcome(PAGE, "consent_choice", description="Choose Allow or Deny.")
    ix.services.remember_consent(user, client, scope)
    return None


BUILTIN = (
    Check("session", session),
    Check("prompt_login", prompt_login),
    Check("max_age", max_age),
    Check("acr", acr),
    Check("gates", gates),
    Check("consent", consent),
)

# The checks of a sign-in itself, without the OAuth consent: what another protocol's single
# sign-on (the SAML IdP, idp.saml) runs before it answers, so that its users meet the same
# login, second factor, step-up and gates as at /authorize.
SIGN_IN = tuple(c for c in BUILTIN if c.name != "consent")
