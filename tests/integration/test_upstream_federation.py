"""Identity brokering to upstream OpenID Providers (issue 23): the IdP as a careful relying
party of the hospital's directory.

A real upstream that is not ours (panva's oidc-provider, tests/e2e/node/upstream.mjs) for the
sign-ins, and a forging upstream (tests/upstream_support.py) for the attacks a relying party
must refuse: wrong aud, wrong iss, missing or wrong nonce, expired, alg none, an unknown key,
mix-up (a code from upstream A on B's callback; RFC 9207 iss), state replay, and an upstream
account claiming the email of an existing local account (no silent takeover)."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import subprocess
import time
from datetime import date, timedelta

import pytest
import requests
from sqlalchemy import select

from idp import clock
from idp.audit.models import AuditEvent
from idp.context import policy, runtime
from idp.extensions import db
from idp.federation.upstream import service
from idp.federation.upstream.models import (
    UpstreamFlow,
    UpstreamLink,
    UpstreamPending,
    UpstreamSession,
)
from idp.oidc.models import UsedDpopProof
from idp.onboarding.models import Application, Facility
from idp.sessions.models import SsoSession
from tests.conftest import TEST_ISSUER
from tests.helpers import PASSWORD, csrf_from, login, make_user, pass_totp
from tests.integration.test_cli import IDP
from tests.upstream_support import (
    UPSTREAM_SECRET,
    ForgingUpstream,
    NodeUpstream,
    callback_path,
    drive,
)

NODE_ACCOUNTS = {
    "ana": {"password": "upstream-pw-ana", "claims": {
        "email": "drsmith@hospital.example", "email_verified": True, "given_name": "Ana",
        "family_name": "Smith"}},
    "newdoc": {"password": "upstream-pw-new", "claims": {
        "email": "maria@partner.example", "email_verified": True, "given_name": "Maria",
        "family_name": "Lopez"}},
}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    upstream = NodeUpstream(tmp_path_factory.mktemp("upstream"), [TEST_ISSUER], NODE_ACCOUNTS)
    yield upstream
    upstream.stop()


@pytest.fixture
def forge():
    upstream = ForgingUpstream()
    yield upstream
    upstream.stop()


def _register(name: str, up, **extra) -> service.Upstream:
    secret = UPSTREAM_SECRET if isinstance(up, NodeUpstream) else "forge-secret-0123456789abc"
    row = service.create(name=name, issuer=up.issuer, client_id=up.client_id,
                         client_secret=secret, actor="test", **extra)
    db.session.commit()
    return row


def _trust(monkeypatch, **rule) -> None:
    rules = dataclasses.replace(policy().upstreams, **rule)
    monkeypatch.setattr(runtime(), "policy", dataclasses.replace(policy(), upstreams=rules))


def _begin(client, name: str, next_url: str = "/account") -> str:
    response = client.get(f"/upstream/{name}/start", query_string={"next": next_url})
    assert response.status_code == 302, response.text[:300]
    return response.headers["Location"]


def _forge_trip(client, forge, name: str = "forge") -> str:
    """Through the forging upstream: returns the callback URL it sends the browser to."""
    answer = requests.get(_begin(client, name), allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    return answer.headers["Location"]


def _failures() -> list[str]:
    return [e.detail.get("reason") for e in db.session.execute(
        select(AuditEvent).where(AuditEvent.event == "upstream.login_failed")).scalars()]


def _sessions() -> list[SsoSession]:
    return list(db.session.execute(select(SsoSession).where(SsoSession.ended_at.is_(None)))
                .scalars())


# -- registration and the login page ---------------------------------------------------------
def test_cli_create_prints_the_redirect_uri_and_keeps_the_secret_encrypted(env, app, ctx, forge):
    result = subprocess.run(
        [IDP, "upstreams", "create", "--name", "entra", "--issuer", forge.issuer,
         "--client-id", "abc", "--client-secret", "very-secret-value-123",
         "--scope", "openid profile email", "--link-by", "email",
         "--allowed-domain", "hospital.example", "--json"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["redirect_uri"] == f"{TEST_ISSUER}/upstream/entra/callback"
    assert out["allowed_domains"] == ["hospital.example"]
    row = service.by_name("entra")
    assert row.client_secret_encrypted and "very-secret" not in row.client_secret_encrypted
    assert service.client_secret(row) == "very-secret-value-123"
    bad = subprocess.run([IDP, "upstreams", "create", "--name", "x", "--issuer", forge.issuer,
                          "--client-id", "abc", "--client-secret", "s", "--scope", "profile"],
                         env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "openid" in bad.stderr and "Traceback" not in bad.stderr


def test_login_page_offers_each_upstream_and_idp_hint_goes_straight_there(ctx, client, forge):
    _register("forge", forge)
    page = client.get("/login")
    assert "Sign in with forge" in page.text
    hinted = client.get("/login", query_string={"idp_hint": "forge", "next": "/account"})
    assert hinted.status_code == 302 and hinted.headers["Location"].startswith(
        "/upstream/forge/start")
    trip = client.get(hinted.headers["Location"])
    assert trip.headers["Location"].startswith(f"{forge.issuer}/authorize?")
    # from an authorization request: the hint rides in its return URL
    via = client.get("/login", query_string={"next": "/authorize?client_id=x&idp_hint=forge"})
    assert via.status_code == 302
    assert client.get("/login", query_string={"idp_hint": "nope"}).status_code == 200


def test_the_trip_uses_pkce_state_and_nonce(ctx, client, forge):
    _register("forge", forge)
    url = _begin(client, "forge")
    from tests.upstream_support import query_of

    asked = query_of(url)
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert len(asked["state"]) >= 32 and len(asked["nonce"]) >= 32
    assert asked["redirect_uri"] == f"{TEST_ISSUER}/upstream/forge/callback"


# -- sign-in of a linked identity ------------------------------------------------------------
def test_linked_identity_still_needs_our_second_factor_and_amr_says_fed(ctx, client, forge):
    user = make_user()
    row = _register("forge", forge)
    service.link(user, row, {"sub": forge.subject}, "proven")
    db.session.commit()
    back = client.get(callback_path(_forge_trip(client, forge)))
    assert back.status_code == 302 and back.headers["Location"] == "/mfa/challenge"
    assert _sessions() == []
    done = pass_totp(client, "drsmith")
    assert done.status_code == 302 and done.headers["Location"] == "/account"
    [sso] = _sessions()
    assert sso.amr[0] == "fed" and "mfa" in sso.amr and "pwd" not in sso.amr
    assert db.session.get(UpstreamSession, sso.id).subject == forge.subject
    # the token exchange authenticated with the client secret, and sent the PKCE verifier
    assert forge.token_requests[-1]["authorization"].startswith("Basic ")
    assert len(forge.token_requests[-1]["code_verifier"]) >= 43


def test_upstream_mfa_counts_only_when_policy_trusts_it(ctx, client, forge, monkeypatch):
    user = make_user()
    row = _register("forge", forge)
    service.link(user, row, {"sub": forge.subject}, "proven")
    db.session.commit()
    forge.claims["amr"] = ["pwd", "mfa"]
    untrusted = client.get(callback_path(_forge_trip(client, forge)))
    assert untrusted.headers["Location"] == "/mfa/challenge"  # policy off: ours is asked
    _trust(monkeypatch, trust_upstream_mfa=True)
    trusted = client.get(callback_path(_forge_trip(client, forge)))
    assert trusted.headers["Location"] == "/account"
    [sso] = _sessions()
    assert sso.amr == ["fed", "mfa"] and sso.acr == policy().upstreams.trusted_mfa_acr
    forge.claims["amr"] = ["pwd"]  # trusted, but no second factor was used up there
    again = client.get(callback_path(_forge_trip(client, forge)))
    assert again.headers["Location"] == "/mfa/challenge"


def test_a_locked_or_disabled_account_cannot_sign_in_through_the_upstream(ctx, client, forge):
    user = make_user()
    row = _register("forge", forge)
    service.link(user, row, {"sub": forge.subject}, "proven")
    user.locked_until = clock.now() + timedelta(minutes=30)
    db.session.commit()
    locked = client.get(callback_path(_forge_trip(client, forge)))
    assert locked.status_code == 403 and _sessions() == []
    user.locked_until = None
    user.disabled = True
    db.session.commit()
    assert client.get(callback_path(_forge_trip(client, forge))).status_code == 403


# -- attacks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("tamper,reason", [
    ({"aud": "someone-else"}, "wrong audience"),
    ({"iss": "https://evil.example"}, "wrong issuer"),
    ({"nonce": None}, "nonce"),
    ({"nonce": "not-the-nonce-we-sent"}, "nonce"),
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"alg": "none"}, "signature"),
    ({"unknown_key": True}, "signature"),
    ({"azp": "another-client"}, "azp"),
    ({"aud": ["healthidp", "another"]}, "azp"),
])
def test_a_spoiled_id_token_is_refused(ctx, client, forge, tamper, reason):
    user = make_user()
    row = _register("forge", forge)
    service.link(user, row, {"sub": forge.subject}, "proven")
    db.session.commit()
    forge.tamper = tamper
    answer = client.get(callback_path(_forge_trip(client, forge)))
    assert answer.status_code == 400 and "could not be completed" in answer.text
    assert _sessions() == [] and "mfa_attempt" not in (client.get_cookie("idp_flow") or "")
    assert any(reason in (r or "") for r in _failures()), _failures()


def test_an_unknown_key_fetches_the_jwks_again_but_not_for_every_request(ctx, client, forge):
    make_user()
    _register("forge", forge)
    client.get(callback_path(_forge_trip(client, forge)))
    fetched = forge.jwks_fetches
    forge.tamper = {"unknown_key": True}
    client.get(callback_path(_forge_trip(client, forge)))
    client.get(callback_path(_forge_trip(client, forge)))
    assert forge.jwks_fetches == fetched  # within jwks_refetch_min_seconds: no refetch


def test_a_rotated_upstream_key_is_picked_up(ctx, client, forge, frozen):
    user = make_user()
    row = _register("forge", forge)
    service.link(user, row, {"sub": forge.subject}, "proven")
    db.session.commit()
    client.get(callback_path(_forge_trip(client, forge)))
    from joserfc.jwk import RSAKey

    forge.key = RSAKey.generate_key(2048, parameters={"kid": "forge-2", "alg": "RS256"})
    frozen.advance(policy().upstreams.jwks_refetch_min_seconds + 1)
    back = client.get(callback_path(_forge_trip(client, forge)))
    assert back.headers["Location"] == "/mfa/challenge"


def test_mix_up_a_code_from_upstream_a_on_the_callback_of_b(ctx, client, forge):
    other = ForgingUpstream()
    try:
        make_user()
        _register("forge", forge)
        _register("other", other)
        url = _forge_trip(client, forge)  # the browser went to A ...
        path = callback_path(url).replace("/upstream/forge/", "/upstream/other/")
        answer = client.get(path)  # ... and its answer is presented on B's callback
        assert answer.status_code == 400 and _sessions() == []
        assert "state belongs to another upstream (mix-up)" in _failures()
        assert other.token_requests == [] and forge.token_requests == []
    finally:
        other.stop()


def test_rfc9207_iss_of_the_authorization_response_is_checked(ctx, client, forge):
    make_user()
    _register("forge", forge)
    forge.iss_param = "https://attacker.example"
    assert client.get(callback_path(_forge_trip(client, forge))).status_code == 400
    assert any("RFC 9207" in r for r in _failures())
    assert forge.token_requests == []  # refused before the code is redeemed anywhere


def test_state_replay_and_a_state_this_browser_did_not_start_are_refused(ctx, client, app,
                                                                         forge):
    user = make_user()
    row = _register("forge", forge)
    service.link(user, row, {"sub": forge.subject}, "proven")
    db.session.commit()
    url = _forge_trip(client, forge)
    assert client.get(callback_path(url)).status_code == 302
    replay = client.get(callback_path(url))
    assert replay.status_code == 400
    stranger = app.test_client()  # login CSRF: another browser's answer pushed to a victim
    url2 = _forge_trip(client, forge)
    assert stranger.get(callback_path(url2)).status_code == 400
    assert "state not started by this browser" in _failures()


def test_an_upstream_error_answer_is_a_readable_page(ctx, client, forge):
    _register("forge", forge)
    url = _begin(client, "forge")
    from tests.upstream_support import query_of

    state = query_of(url)["state"]
    answer = client.get("/upstream/forge/callback", query_string={
        "error": "access_denied", "state": state, "iss": forge.issuer})
    assert answer.status_code == 400 and "could not be completed" in answer.text


# -- unknown identities: never linked silently -----------------------------------------------
def test_an_upstream_claiming_a_local_email_is_not_linked_silently(ctx, client, forge,
                                                                  monkeypatch):
    make_user()  # drsmith@hospital.example
    _register("forge", forge, allowed_domains=["partner.example"])
    forge.claims = {"email": "drsmith@hospital.example", "email_verified": True}
    answer = client.get(callback_path(_forge_trip(client, forge)))
    assert answer.headers["Location"] == "/upstream/link" and _sessions() == []
    assert db.session.execute(select(UpstreamLink)).first() is None
    # auto-link allowed by policy, but the domain is not one of this upstream's
    _trust(monkeypatch, auto_link=True)
    answer = client.get(callback_path(_forge_trip(client, forge)))
    assert answer.headers["Location"] == "/upstream/link"
    assert db.session.execute(select(UpstreamLink)).first() is None
    # nor an unverified address in an allowed domain
    row = service.by_name("forge")
    row.allowed_domains = ["hospital.example"]
    db.session.commit()
    forge.claims = {"email": "drsmith@hospital.example", "email_verified": False}
    answer = client.get(callback_path(_forge_trip(client, forge)))
    assert answer.headers["Location"] == "/upstream/link"
    assert db.session.execute(select(UpstreamLink)).first() is None


def test_policy_may_auto_link_a_verified_email_in_an_allowed_domain(ctx, client, forge,
                                                                    monkeypatch):
    make_user()
    _register("forge", forge, allowed_domains=["hospital.example"])
    _trust(monkeypatch, auto_link=True)
    forge.claims = {"email": "DrSmith@hospital.example", "email_verified": True}
    answer = client.get(callback_path(_forge_trip(client, forge)))
    assert answer.headers["Location"] == "/mfa/challenge"  # linked, then our second factor
    link = db.session.execute(select(UpstreamLink)).scalar_one()
    assert (link.issuer, link.subject, link.how) == (forge.issuer, forge.subject, "auto")


def test_first_link_proven_by_password_and_totp_at_the_node_upstream(ctx, client, node):
    make_user()
    _register("node", node)
    url, _ = drive(_begin(client, "node"), "ana", NODE_ACCOUNTS["ana"]["password"])
    assert "iss=" in url  # oidc-provider sends RFC 9207 iss
    answer = client.get(callback_path(url))
    assert answer.headers["Location"] == "/upstream/link"
    page = client.get("/upstream/link")
    assert "drsmith@hospital.example" in page.text and "Apply for an account" in page.text
    wrong = client.post("/upstream/link", data={"username": "drsmith", "password": "nope",
                                                "csrf_token": csrf_from(page.text)})
    assert wrong.status_code == 401 and db.session.execute(select(UpstreamLink)).first() is None
    proven = client.post("/upstream/link", data={"username": "drsmith", "password": PASSWORD,
                                                 "csrf_token": csrf_from(page.text)})
    assert proven.headers["Location"] == "/mfa/challenge"
    assert db.session.execute(select(UpstreamLink)).first() is None  # not before the factor
    done = pass_totp(client, "drsmith")
    assert done.status_code == 302
    link = db.session.execute(select(UpstreamLink)).scalar_one()
    assert (link.issuer, link.subject, link.how) == (node.issuer, "ana", "proven")
    [sso] = _sessions()
    assert sso.amr[0] == "fed" and {"pwd", "mfa"} <= set(sso.amr)
    events = {e.event for e in db.session.execute(select(AuditEvent)).scalars()}
    assert {"upstream.linked", "upstream.unknown_identity", "login.success"} <= events
    # next time: the link is known, our second factor is asked
    url, _ = drive(_begin(client, "node"), "ana", NODE_ACCOUNTS["ana"]["password"])
    assert client.get(callback_path(url)).headers["Location"] == "/mfa/challenge"


def test_a_new_person_applies_prefilled_and_lands_in_the_verification_queue(ctx, client, node):
    facility = Facility(name="General Hospital", active=True, created_at=clock.now())
    db.session.add(facility)
    db.session.commit()
    _register("node", node)
    url, _ = drive(_begin(client, "node"), "newdoc", NODE_ACCOUNTS["newdoc"]["password"])
    assert client.get(callback_path(url)).headers["Location"] == "/upstream/link"
    form = client.get("/onboarding/apply")
    assert 'value="Maria"' in form.text and 'value="maria@partner.example"' in form.text
    data = {"given_name": "Maria", "family_name": "Lopez", "email": "maria@partner.example",
            "phone": "+1 650 253 0000", "role": "physician", "npi": "1245319599",
            "license_state": "CA", "license_number": "A123456",
            "license_expires": (date.today() + timedelta(days=365)).isoformat(),
            "facility_id": str(facility.id), "department_id": "",
            "csrf_token": csrf_from(form.text)}
    answer = client.post("/onboarding/apply", data=data)
    assert answer.status_code == 200 and "Application received" in answer.text
    item = db.session.execute(select(Application)).scalar_one()
    assert item.status == "pending"  # in the queue: the upstream verified the address
    pending = db.session.execute(select(UpstreamPending)).scalar_one()
    assert pending.application_id == item.id
    assert db.session.execute(select(UpstreamLink)).first() is None
    from idp.onboarding import service as onboarding

    verifier = make_user("verifier", npi=None, role="verifier", totp=False)
    onboarding.approve(item, verifier, "physician", facility.id, None)
    db.session.commit()
    link = db.session.execute(select(UpstreamLink)).scalar_one()
    assert (link.subject, link.how, link.user_id) == ("newdoc", "onboarding", item.user_id)


# -- logout and the account page -------------------------------------------------------------
def test_an_upstream_logout_token_ends_our_session(ctx, client, forge, monkeypatch):
    user = make_user()
    row = _register("forge", forge)
    service.link(user, row, {"sub": forge.subject}, "proven")
    db.session.commit()
    forge.claims = {"sid": "upstream-sid-1"}
    client.get(callback_path(_forge_trip(client, forge)))
    pass_totp(client, "drsmith")
    [sso] = _sessions()
    bad = client.post("/upstream/forge/backchannel-logout",
                      data={"logout_token": forge.logout_token(sid="upstream-sid-1",
                                                               nonce="x")})
    assert bad.status_code == 400 and len(_sessions()) == 1
    other = ForgingUpstream()
    try:  # signed by someone else's key, claiming this upstream
        other.issuer = forge.issuer
        forged = client.post("/upstream/forge/backchannel-logout",
                             data={"logout_token": other.logout_token(sid="upstream-sid-1")})
        assert forged.status_code == 400 and len(_sessions()) == 1
    finally:
        other.stop()
    good = client.post("/upstream/forge/backchannel-logout",
                       data={"logout_token": forge.logout_token(sid="upstream-sid-1")})
    assert good.status_code == 200 and good.headers["Cache-Control"] == "no-store"
    assert _sessions() == []
    db.session.refresh(sso)
    assert sso.end_reason == "upstream_logout"
    assert client.get("/account").status_code == 302


def _refusals() -> list[str]:
    return [e.detail.get("reason") for e in db.session.execute(
        select(AuditEvent).where(AuditEvent.event == "upstream.backchannel_refused")
        .order_by(AuditEvent.seq)).scalars()]


def test_a_replayed_logout_token_is_refused_and_ends_no_later_session(ctx, client, forge):
    """Back-Channel Logout 1.0 §2.6: a jti seen before is refused. A replayed token naming
    the sub would otherwise end every later session of that person."""
    user = make_user()
    row = _register("forge", forge)
    service.link(user, row, {"sub": forge.subject}, "proven")
    db.session.commit()
    client.get(callback_path(_forge_trip(client, forge)))
    pass_totp(client, "drsmith")
    token = forge.logout_token(sub=forge.subject)
    first = client.post("/upstream/forge/backchannel-logout", data={"logout_token": token})
    assert first.status_code == 200 and _sessions() == []
    client.get(callback_path(_forge_trip(client, forge)))  # signs in again
    pass_totp(client, "drsmith")
    [later] = _sessions()
    replay = client.post("/upstream/forge/backchannel-logout", data={"logout_token": token})
    assert replay.status_code == 400 and replay.json == {"error": "invalid_request"}
    assert replay.headers["Cache-Control"] == "no-store"
    no_jti = client.post("/upstream/forge/backchannel-logout",
                         data={"logout_token": forge.logout_token(sub=forge.subject, jti=None)})
    assert no_jti.status_code == 400
    assert [s.id for s in _sessions()] == [later.id]
    refused = _refusals()
    assert refused[0] == "logout token replayed (jti seen before)"
    assert refused[1].startswith("logout token refused:") and "jti" in refused[1]
    done = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "upstream.backchannel_logout")).scalars().all()
    assert [e.detail["ended"] for e in done] == [1]
    assert client.get("/account").status_code == 200


def test_expired_upstream_flows_and_logout_jtis_are_purged_live_ones_stay(
        ctx, client, forge, frozen, monkeypatch):
    row = _register("forge", forge)
    _begin(client, "forge")
    now = int(clock.now().timestamp())
    service._use_logout_jti(row, "old-jti", now)
    service._use_logout_jti(row, "live-jti", now + 7 * 86400)
    db.session.commit()
    [old_flow] = db.session.execute(select(UpstreamFlow.state_hash)).scalars().all()
    frozen.advance(max(policy().upstreams.flow_lifetime, 60) + 120)
    monkeypatch.setattr(service, "PURGE_EVERY", 1)  # this begin() is the one that purges
    _begin(client, "forge")
    db.session.expire_all()
    flows = db.session.execute(select(UpstreamFlow.state_hash)).scalars().all()
    assert len(flows) == 1 and flows != [old_flow]
    kept = set(db.session.execute(select(UsedDpopProof.jti_hash)).scalars())
    keys = {name: service.digest(f"upstream-logout:{row.id}:{name}")
            for name in ("old-jti", "live-jti")}
    assert keys["live-jti"] in kept and keys["old-jti"] not in kept
    assert service.purge_expired() == {"flows": 0, "jtis": 0}
    with pytest.raises(service.UpstreamError, match="replayed"):
        service._use_logout_jti(row, "live-jti", now + 7 * 86400)


def test_account_page_lists_links_and_unlink_keeps_a_way_to_sign_in(ctx, signed_in, forge):
    from idp.accounts.models import User

    user = db.session.execute(select(User)).scalar_one()
    row = _register("forge", forge)
    link = service.link(user, row, {"sub": forge.subject, "email": "a@partner.example"},
                        "proven")
    db.session.commit()
    assert "/account/linked" in signed_in.get("/account").text  # the account page links it
    page = signed_in.get("/account/linked")
    assert "a@partner.example" in page.text and "forge" in page.text
    user.password_hash = None  # federated-only account: the link is its only way in
    db.session.commit()
    refused = signed_in.post(f"/account/linked/{link.id}/unlink",
                             data={"csrf_token": csrf_from(page.text)})
    assert refused.status_code == 400 and "only way" in refused.text
    assert db.session.get(UpstreamLink, link.id) is not None
    from idp.accounts import passwords

    passwords.set_password(user, PASSWORD)
    db.session.commit()
    done = signed_in.post(f"/account/linked/{link.id}/unlink",
                          data={"csrf_token": csrf_from(page.text)})
    assert done.status_code == 302 and db.session.get(UpstreamLink, link.id) is None
    assert db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "upstream.unlinked")).first() is not None


def test_unlink_needs_a_recent_sign_in(ctx, signed_in, forge, frozen):
    from idp.accounts.models import User

    user = db.session.execute(select(User)).scalar_one()
    link = service.link(user, _register("forge", forge), {"sub": "x"}, "proven")
    db.session.commit()
    page = signed_in.get("/account/linked")
    frozen.advance(policy().mfa.reauth_window + 60)
    answer = signed_in.post(f"/account/linked/{link.id}/unlink",
                            data={"csrf_token": csrf_from(page.text)})
    assert answer.status_code in (302, 303) and "/account/linked" not in answer.headers["Location"]
    assert db.session.get(UpstreamLink, link.id) is not None


def test_our_logout_offers_to_sign_out_at_the_upstream(ctx, client, forge):
    user = make_user()
    row = _register("forge", forge)
    service.link(user, row, {"sub": forge.subject}, "proven")
    db.session.commit()
    client.get(callback_path(_forge_trip(client, forge)))
    pass_totp(client, "drsmith")
    page = client.get("/logout")
    answer = client.post("/logout", data={"confirm": "yes", "csrf_token": csrf_from(page.text)})
    assert answer.status_code == 200 and _sessions() == []
    from tests.upstream_support import query_of

    found = re.search(r'href="([^"]+)" data-logout-offer', answer.text)
    assert found, answer.text
    offer = html.unescape(found.group(1))
    assert offer.startswith(f"{forge.issuer}/logout?")
    asked = query_of(offer)
    assert asked["client_id"] == "healthidp"
    assert asked["post_logout_redirect_uri"] == f"{TEST_ISSUER}/login"
    assert asked["id_token_hint"].count(".") == 2  # the upstream's own ID token, as its hint


# -- admin console ---------------------------------------------------------------------------
def test_admin_console_adds_lists_and_disables_upstreams(ctx, client, forge):
    doc_browser = client.application.test_client()
    make_user("dr.jones", npi=None)
    assert login(doc_browser, "dr.jones").status_code == 302
    assert doc_browser.get("/admin/upstreams").status_code == 403  # a clinician
    make_user("root.admin", npi=None, role="admin")
    assert login(client, "root.admin").status_code == 302
    page = client.get("/admin/upstreams")
    assert page.status_code == 200 and "No upstream yet." in page.text
    bad = client.post("/admin/upstreams", data={
        "name": "Bad Name!", "issuer": forge.issuer, "client_id": "abc",
        "client_secret": "s3cret-value", "scope": "openid", "link_by": "email",
        "csrf_token": csrf_from(page.text)})
    assert bad.status_code == 400 and "name:" in bad.text
    made = client.post("/admin/upstreams", data={
        "name": "entra", "issuer": forge.issuer, "client_id": "abc",
        "client_secret": "s3cret-value", "scope": "openid profile email", "link_by": "upn",
        "allowed_domains": "hospital.example", "csrf_token": csrf_from(page.text)})
    assert made.status_code == 200
    assert f"{TEST_ISSUER}/upstream/entra/callback" in made.text
    assert "s3cret-value" not in made.text
    row = service.by_name("entra")
    assert (row.link_by, row.allowed_domains) == ("upn", ["hospital.example"])
    off = client.post("/admin/upstreams/entra/disable",
                      data={"csrf_token": csrf_from(made.text)})
    assert off.status_code == 302
    db.session.refresh(row)
    assert not row.enabled and "Sign in with entra" not in client.get("/login").text
    events = [e.event for e in db.session.execute(select(AuditEvent)).scalars()]
    assert "upstream.created" in events and "upstream.disabled" in events
