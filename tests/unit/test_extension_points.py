"""The extension points the core exposes to features: idp.oidc.registry (scopes, claims,
audiences, token context) and idp.core.events (session_ended, tokens_withdrawn)."""

from __future__ import annotations

import pytest
from flask import Flask

from idp.config import POLICY_DIR
from idp.core import events
from idp.oidc import registry
from idp.oidc.registry import Registry, ScopeFamily
from idp.policy import load_policy

POLICY = load_policy(POLICY_DIR)
SMART_SCOPES = {"fhirUser", "launch", "launch/patient", "launch/encounter"}


def test_a_features_scopes_are_offered_only_while_it_is_installed():
    app = Flask(__name__)
    reg = registry.install(app)
    offered = reg.supported_scopes(POLICY)
    assert {"openid", "profile", "roles", "ehr.patients.read"} <= offered
    assert not offered & SMART_SCOPES
    registry.add_feature(app, "smart")
    assert SMART_SCOPES <= reg.supported_scopes(POLICY)
    assert "emergency_access" not in reg.supported_scopes(POLICY)
    registry.add_feature(app, "breakglass")
    assert "emergency_access" in reg.supported_scopes(POLICY)
    assert "udap" not in reg.supported_scopes(POLICY)
    registry.add_feature(app, "udap")
    assert reg.supported_scopes(POLICY) == set(POLICY.scopes)


def test_contributions_are_asked_in_install_order_and_merged():
    app = Flask(__name__)
    registry.install(app)
    registry.add_feature(app, "a", claims=[lambda user, allowed: {"x": 1, "y": 1}],
                         audiences=[lambda scopes: ["https://a"]],
                         token_claims=[lambda user, scopes, ctx: {"t": "a"}])
    registry.add_feature(app, "b", claims=[lambda user, allowed: {"y": 2}],
                         audiences=[lambda scopes: ["https://b"] if "b" in scopes else []],
                         token_claims=[lambda user, scopes, ctx: {}])
    reg = registry.of(app)
    assert reg.extra_claims(object(), set()) == {"x": 1, "y": 2}
    assert reg.extra_audiences(["b"]) == ["https://a", "https://b"]
    assert reg.extra_audiences([]) == ["https://a"]
    assert reg.extra_token_claims(object(), [], None) == {"t": "a"}
    assert reg.features == {"a", "b"}


def test_an_unknown_extension_point_is_refused():
    app = Flask(__name__)
    registry.install(app)
    with pytest.raises(TypeError, match="no extension point"):
        registry.add_feature(app, "f", clams=[])
    with pytest.raises(TypeError):
        registry.add_feature(app, "f", features=["g"])


def test_scope_families():
    family = ScopeFamily(recognizes=lambda s: s.startswith("x/"),
                         covered=lambda s, registered: "x/*" in registered,
                         describe=lambda s: f"Use {s[2:]}")
    reg = Registry(scope_families=[family])
    assert reg.in_family("x/a") and not reg.in_family("y/a")
    assert reg.covered("x/a", {"x/*"}) and not reg.covered("x/a", {"x/b"})
    assert reg.describe("x/a") == "Use a" and reg.describe("y/a") is None
    assert not Registry().in_family("x/a")


def test_events_run_each_subscriber_of_the_current_app_in_order():
    app, other = Flask(__name__), Flask(__name__)
    heard: list[tuple] = []

    def first(sids: list[str], reason: str) -> None:
        heard.append(("first", tuple(sids), reason))

    def second(sids: list[str], reason: str) -> None:
        heard.append(("second", tuple(sids), reason))

    events.subscribe(app, events.SESSION_ENDED, first)
    events.subscribe(app, events.SESSION_ENDED, second)
    events.subscribe(app, events.SESSION_ENDED, first)  # once per handler
    with app.app_context():
        events.emit(events.SESSION_ENDED, sids=["s1"], reason="logout")
    with other.app_context():  # another app's subscribers are not this one's
        events.emit(events.SESSION_ENDED, sids=["s2"], reason="idle")
    events.emit(events.SESSION_ENDED, sids=["s3"], reason="idle")  # no app: nobody listens
    assert heard == [("first", ("s1",), "logout"), ("second", ("s1",), "logout")]


def test_a_demanded_event_without_a_handler_fails_instead_of_doing_nothing():
    """Token revocation is asked for with events.demand: an app where nobody revokes must not
    report a revocation that did not happen."""
    app = Flask(__name__)
    heard: list[dict] = []
    with pytest.raises(RuntimeError, match="tokens_withdrawn"):
        events.demand(events.TOKENS_WITHDRAWN, user_id=1, sid=None, keep_sid=None)
    with app.app_context(), pytest.raises(RuntimeError, match="tokens_withdrawn"):
        events.demand(events.TOKENS_WITHDRAWN, user_id=1, sid=None, keep_sid=None)
    events.subscribe(app, events.TOKENS_WITHDRAWN, lambda **payload: heard.append(payload))
    with app.app_context():
        events.demand(events.TOKENS_WITHDRAWN, user_id=1, sid="s1", keep_sid=None)
    assert heard == [{"user_id": 1, "sid": "s1", "keep_sid": None}]
