"""The checks of the /authorize pipeline (idp.oidc.interaction), one by one, as pure functions
of an Interaction: a session, a grant and the services they ask, all plain values here."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from flask import Flask

from idp.config import POLICY_DIR
from idp.epcs import install as epcs
from idp.epcs.service import Step
from idp.oidc.interaction import checks, pipeline
from idp.oidc.interaction.pipeline import Check, Interaction, Outcome, Services
from idp.policy import load_policy
from idp.smart import interaction as smart

POLICY = load_policy(POLICY_DIR)
AAL1, AAL2, AAL2_PHR, EPCS = POLICY.assurance.acr_values
NOW = 1_900_000_000.0
REDIRECT = "https://rp.example/cb"


def _never(*_: object) -> None:
    raise AssertionError("not asked")


def services(**given: object) -> Services:
    asked = {"pending_gate": lambda user: None, "has_consent": lambda *a: False,
             "achievable_acr": lambda user: AAL2, "remember_consent": _never}
    return Services(**{**asked, **given})


def sso(signed_in_ago: float = 60, acr: str = AAL2) -> SimpleNamespace:
    user = SimpleNamespace(id=7, subject="sub-7")
    return SimpleNamespace(id="sid-1", user=user, acr=acr, amr=["pwd", "otp"],
                           auth_time=datetime.fromtimestamp(NOW - signed_in_ago, UTC))


def interaction(session: SimpleNamespace | None = None, *, scope: str = "openid profile",
                first_party: bool = False, decision: str | None = None,
                marker: float | None = None, svc: Services | None = None,
                **params: str) -> Interaction:
    client = SimpleNamespace(client_id="rp", first_party=first_party)
    request = SimpleNamespace(scope=scope, payload=SimpleNamespace(scope=scope))
    grant = SimpleNamespace(client=client, redirect_uri=REDIRECT, request=request)
    return Interaction(grant=grant, sso=session, params={"scope": scope, **params},
                       key="k1", return_to="/authorize?x=1", now=NOW,
                       assurance=POLICY.assurance, services=svc or services(),
                       marker=marker, decision=decision)


def error_of(outcome: Outcome | None) -> str:
    assert outcome is not None and outcome.kind == pipeline.ERROR, outcome
    assert outcome.error.redirect_uri == REDIRECT  # back to the client, not the IdP's page
    return outcome.error.error


# -- session, prompt=login, max_age ------------------------------------------------------------
def test_no_session_sends_the_user_to_sign_in():
    outcome = checks.session(interaction())
    assert (outcome.kind, outcome.reason, outcome.mark) == (pipeline.LOGIN, "no_session", False)
    assert checks.session(interaction(prompt="login")).mark is True
    assert checks.session(interaction(sso())) is None


def test_no_session_under_prompt_none_is_login_required():
    assert error_of(checks.session(interaction(prompt="none"))) == "login_required"


def test_prompt_login_asks_for_a_sign_in_after_the_request_was_first_seen():
    asked = checks.prompt_login(interaction(sso(), prompt="login"))
    assert (asked.kind, asked.reason, asked.mark) == (pipeline.LOGIN, "prompt_login", True)
    # signed in 60 s ago; the request first sent the user to sign in 120 s ago: satisfied
    assert checks.prompt_login(interaction(sso(), prompt="login", marker=NOW - 120)) is None
    # ... but a marker set after that sign-in asks again
    assert checks.prompt_login(interaction(sso(), prompt="login", marker=NOW - 30)) is not None
    assert checks.prompt_login(interaction(sso())) is None


def test_max_age_asks_for_a_fresh_sign_in():
    stale = checks.max_age(interaction(sso(signed_in_ago=600), max_age="300"))
    assert (stale.kind, stale.reason, stale.mark) == (pipeline.LOGIN, "max_age", True)
    assert checks.max_age(interaction(sso(signed_in_ago=60), max_age="300")) is None
    assert checks.max_age(interaction(sso(signed_in_ago=1), max_age="0")) is not None
    # max_age=0 is met by a sign-in made after this request asked for it
    assert checks.max_age(interaction(sso(signed_in_ago=1), max_age="0",
                                      marker=NOW - 5)) is None
    assert error_of(checks.max_age(interaction(sso(signed_in_ago=600), max_age="300",
                                               prompt="none"))) == "login_required"


# -- acr: step-up or unmet ---------------------------------------------------------------------
def test_a_stronger_acr_the_account_can_reach_is_a_step_up():
    outcome = checks.acr(interaction(sso(acr=AAL1), acr_values=AAL2,
                                     svc=services(achievable_acr=lambda user: AAL2_PHR)))
    assert (outcome.kind, outcome.reason, outcome.acr) == (pipeline.STEP_UP, "step_up", AAL2)


def test_step_up_under_prompt_none_is_interaction_required():
    outcome = checks.acr(interaction(sso(acr=AAL1), acr_values=AAL2, prompt="none"))
    assert error_of(outcome) == "interaction_required"


def test_an_acr_the_account_cannot_reach_is_unmet_even_without_prompt_none():
    for prompt in ("", "none"):
        outcome = checks.acr(interaction(sso(acr=AAL1), acr_values=AAL2_PHR, prompt=prompt,
                                         svc=services(achievable_acr=lambda user: AAL2)))
        assert error_of(outcome) == "unmet_authentication_requirements"
        assert outcome.reason == "unmet_acr"


def test_acr_values_met_or_unknown_pass():
    assert checks.acr(interaction(sso(acr=AAL2), acr_values=AAL2,
                                  svc=services(achievable_acr=_never))) is None
    assert checks.acr(interaction(sso(acr=AAL2), acr_values="urn:unknown",
                                  svc=services(achievable_acr=_never))) is None
    # acr_values lists acceptable values: the weakest known one is what must be met
    assert checks.acr(interaction(sso(acr=AAL2), acr_values=f"{AAL2_PHR} {AAL2}",
                                  svc=services(achievable_acr=_never))) is None


# -- gates, consent ----------------------------------------------------------------------------
def test_a_pending_gate_comes_first():
    svc = services(pending_gate=lambda user: "accounts.acknowledge")
    outcome = checks.gates(interaction(sso(), svc=svc))
    assert (outcome.kind, outcome.endpoint) == (pipeline.REDIRECT, "accounts.acknowledge")
    assert outcome.args == {"next": "/authorize?x=1"}
    assert error_of(checks.gates(interaction(sso(), svc=svc, prompt="none"))) == \
        "interaction_required"
    assert checks.gates(interaction(sso())) is None


def test_consent_is_skipped_for_first_party_clients_and_remembered_scopes():
    assert checks.consent(interaction(sso(), first_party=True,
                                      svc=services(has_consent=_never))) is None
    assert checks.consent(interaction(sso(), svc=services(
        has_consent=lambda user, client, scope: scope == "openid profile"))) is None


def test_consent_page_when_not_given_or_asked_for_again():
    page = checks.consent(interaction(sso()))
    assert (page.kind, page.reason) == (pipeline.CONSENT, "consent_required")
    forced = checks.consent(interaction(sso(), first_party=True, prompt="consent"))
    assert forced.kind == pipeline.CONSENT
    assert error_of(checks.consent(interaction(sso(), prompt="none"))) == "consent_required"


def test_the_consent_forms_choice():
    assert checks.consent(interaction(sso(), decision="deny")).kind == pipeline.DENY
    neither = checks.consent(interaction(sso(), decision=""))
    assert (neither.kind, neither.reason) == (pipeline.PAGE, "consent_choice")
    remembered = []
    svc = services(remember_consent=lambda user, client, scope: remembered.append(scope))
    assert checks.consent(interaction(sso(), decision="allow", svc=svc)) is None
    assert remembered == ["openid profile"]


# -- the pipeline ------------------------------------------------------------------------------
def test_the_first_outcome_wins_and_all_passing_issues_with_the_sessions_sign_in():
    session = sso(acr=AAL2)
    ix = interaction(session, first_party=True)
    issued = pipeline.run(ix, checks.BUILTIN)
    assert (issued.kind, issued.reason) == (pipeline.ISSUE, "granted")
    assert (issued.auth.sid, issued.auth.acr, issued.auth.amr) == ("sid-1", AAL2, ["pwd", "otp"])
    assert issued.auth.auth_time == session.auth_time
    # no session and a pending consent: the sign-in comes first
    assert pipeline.run(interaction(), checks.BUILTIN).reason == "no_session"


def test_feature_checks_are_placed_before_the_check_they_name_or_at_the_end():
    first = Check("first", lambda ix: None, before="session")
    last = Check("last", lambda ix: None)
    order = [c.name for c in pipeline.arrange(checks.BUILTIN, [first, last])]
    assert order == ["first", "session", "prompt_login", "max_age", "acr", "gates", "consent",
                     "last"]
    with pytest.raises(ValueError, match="no check"):
        pipeline.arrange(checks.BUILTIN, [Check("x", lambda ix: None, before="nowhere")])


# -- EPCS (feature check, before the session check) -------------------------------------------
def test_a_finished_epcs_ceremony_settles_the_sign_in_with_its_own_acr():
    session = sso(signed_in_ago=7200, acr=AAL1)
    done_at = datetime.fromtimestamp(NOW - 5, UTC)
    ceremony = SimpleNamespace(id="c1", completed_at=done_at, acr=EPCS, amr=["pwd", "hwk"])
    ix = interaction(session, first_party=True, acr_values=EPCS, max_age="60", prompt="login")
    assert epcs.step_outcome(ix, Step("done", ceremony=ceremony)) is None
    issued = pipeline.run(ix, checks.BUILTIN)  # no sign-in, max_age or step-up asked
    assert issued.kind == pipeline.ISSUE
    assert (issued.auth.acr, issued.auth.amr, issued.auth.auth_time, issued.auth.sid) == \
        (EPCS, ["pwd", "hwk"], done_at, "sid-1")


def test_epcs_steps_as_outcomes():
    ix = interaction(sso(), acr_values=EPCS)
    refused = epcs.step_outcome(ix, Step("refuse", "access_denied", "no permission"))
    assert error_of(refused) == "access_denied" and refused.reason == "epcs_refused"
    ceremony = epcs.step_outcome(ix, Step("ceremony", ceremony=SimpleNamespace(id="c9")))
    assert (ceremony.kind, ceremony.endpoint, ceremony.args) == (
        pipeline.REDIRECT, "epcs.ceremony", {"ceremony_id": "c9"})
    login = epcs.step_outcome(interaction(None, acr_values=EPCS), Step("login"))
    assert (login.kind, login.reason) == (pipeline.LOGIN, "epcs_login")
    assert error_of(epcs.step_outcome(interaction(None, acr_values=EPCS, prompt="none"),
                                      Step("login"))) == "login_required"



# -- SMART patient pick (feature check, after consent) -----------------------------------------
@pytest.fixture
def flow_session():
    app = Flask(__name__)
    app.secret_key = "unit-test-key"
    with app.test_request_context():
        yield


def test_a_standalone_launch_waits_for_the_users_patient_choice(flow_session):
    from flask import session

    ix = interaction(sso(), scope="openid launch/patient patient/*.rs")
    outcome = smart.patient_pick(ix)
    assert (outcome.kind, outcome.reason, outcome.endpoint) == (
        pipeline.REDIRECT, "patient_pick", "smart.pick_patient")
    assert error_of(smart.patient_pick(interaction(
        sso(), scope="openid launch/patient", prompt="none"))) == "interaction_required"
    session[smart.PICKS] = {"k1": {"patient": "P-1", "sub": "someone-else"}}
    assert smart.patient_pick(ix).kind == pipeline.REDIRECT  # another user's choice
    session[smart.PICKS] = {"k1": {"patient": "P-1", "sub": "sub-7"}}
    assert smart.patient_pick(ix) is None
    assert ix.values == {"smart.patient": "P-1"}
    assert session[smart.PICKS] == {}  # single use


def test_no_patient_pick_for_an_ehr_launch_or_without_launch_patient(flow_session):
    assert smart.patient_pick(interaction(sso(), scope="openid launch launch/patient")) is None
    assert smart.patient_pick(interaction(sso(), scope="openid patient/*.rs")) is None
