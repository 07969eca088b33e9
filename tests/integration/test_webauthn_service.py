"""WebAuthn without a browser: a software authenticator (P-256, "none" attestation) answers the
IdP's options over the Flask test client, so every server-side rule is checked on real
ceremonies: options content, single-use challenges, user verification required, the sign
counter and its clone warning, lockout, passkey sign-in and step-up."""

from __future__ import annotations

import hashlib
import json
import secrets
from urllib.parse import urlencode

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select
from webauthn.helpers import bytes_to_base64url

from idp import clock
from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.context import policy
from idp.extensions import db
from idp.mfa.models import Factor, LoginAttempt
from idp.sessions.models import SsoSession
from tests.conftest import TEST_ISSUER
from tests.helpers import (
    PASSWORD,
    auth_params,
    csrf_from,
    exchange,
    forget_totp_use,
    make_client,
    make_user,
    pkce,
    query,
    totp_now,
)

RP_ID = "idp.test"  # the host of TEST_ISSUER
ORIGIN = TEST_ISSUER
PHR = "urn:healthidp:acr:aal2-phr"
AAGUID = bytes.fromhex("00112233445566778899aabbccddeeff")


class SoftAuthenticator:
    """Just enough of a CTAP2 authenticator: one P-256 credential, flags and counter chosen
    by the test."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = secrets.token_bytes(32)
        self.sign_count = 0
        self.user_handle: str | None = None

    @property
    def id(self) -> str:
        return bytes_to_base64url(self.credential_id)

    def cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})

    def _auth_data(self, rp_id: str, *, uv: bool, count: int, attested: bool) -> bytes:
        flags = 0x01 | (0x04 if uv else 0) | (0x40 if attested else 0)
        data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + count.to_bytes(4, "big")
        if attested:
            data += AAGUID + len(self.credential_id).to_bytes(2, "big") + self.credential_id \
                + self.cose_key()
        return data

    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin,
                           "crossOrigin": False}).encode()

    def create(self, options: dict, *, uv: bool = True, origin: str = ORIGIN,
               rp_id: str | None = None) -> dict:
        self.user_handle = options["user"]["id"]
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        auth_data = self._auth_data(rp_id or options["rp"]["id"], uv=uv, count=self.sign_count,
                                    attested=True)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {"id": self.id, "rawId": self.id, "type": "public-key",
                "authenticatorAttachment": "platform", "clientExtensionResults": {},
                "response": {"clientDataJSON": bytes_to_base64url(client_data),
                             "attestationObject": bytes_to_base64url(attestation),
                             "transports": ["internal", "bogus"]}}

    def get(self, options: dict, *, uv: bool = True, count: int | None = None,
            origin: str = ORIGIN, rp_id: str | None = None, user_handle: str | None = None
            ) -> dict:
        if count is None:
            self.sign_count += 1
            count = self.sign_count
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        auth_data = self._auth_data(rp_id or options["rpId"], uv=uv, count=count,
                                    attested=False)
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                  ec.ECDSA(hashes.SHA256()))
        return {"id": self.id, "rawId": self.id, "type": "public-key",
                "authenticatorAttachment": "platform", "clientExtensionResults": {},
                "response": {"clientDataJSON": bytes_to_base64url(client_data),
                             "authenticatorData": bytes_to_base64url(auth_data),
                             "signature": bytes_to_base64url(signature),
                             "userHandle": user_handle or self.user_handle}}


# -- helpers -------------------------------------------------------------------------------
def seed(user: User, authenticator: SoftAuthenticator, sign_count: int = 0) -> Factor:
    """A registered credential, as enrollment would leave it."""
    authenticator.sign_count = sign_count
    authenticator.user_handle = bytes_to_base64url(user.subject.encode())
    factor = Factor(user_id=user.id, kind="webauthn", label="Laptop", created_at=clock.now(),
                    confirmed_at=clock.now(), credential_id=authenticator.id,
                    public_key=authenticator.cose_key(), sign_count=sign_count,
                    transports=["internal"], aaguid=str(AAGUID), user_verified=True)
    db.session.add(factor)
    db.session.commit()
    return factor


def token_of(http, path: str = "/login") -> str:
    return csrf_from(http.get(path).text)


def post_json(http, path: str, body: dict, token: str):
    return http.post(path, json=body, headers={"X-CSRFToken": token})


def password_step(http, username: str = "drsmith"):
    page = http.get("/login")
    response = http.post("/login", data={"username": username, "password": PASSWORD,
                                         "csrf_token": csrf_from(page.text), "next": "/account"})
    assert response.headers["Location"] == "/mfa/challenge"
    return response


def totp_step(http, username: str = "drsmith") -> None:
    """The authenticator-app step, naming the TOTP factor (WebAuthn is offered first)."""
    factor_id = db.session.execute(select(Factor.id).join(User).where(
        User.username == username, Factor.kind == "totp")).scalar_one()
    page = http.get(f"/mfa/challenge?factor={factor_id}")
    done = http.post("/mfa/challenge", data={"code": totp_now(username), "factor": factor_id,
                                             "csrf_token": csrf_from(page.text)})
    assert done.status_code == 302, done.text
    forget_totp_use(username)


def challenge_token(http) -> str:
    page = http.get("/mfa/challenge")
    assert page.status_code == 200
    assert 'data-webauthn="authenticate"' in page.text
    return csrf_from(page.text)


def sessions_of(user: User) -> list[SsoSession]:
    db.session.expire_all()
    return list(db.session.execute(select(SsoSession).where(
        SsoSession.user_id == user.id, SsoSession.ended_at.is_(None))).scalars())


def events(name: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name))
                .scalars())


def failures(user: User) -> int:
    db.session.expire_all()
    return db.session.get(User, user.id).failed_logins


# -- registration --------------------------------------------------------------------------
def test_registration_options_and_enrollment_from_settings(ctx, client, mailbox):
    user = make_user()
    password_step(client)
    totp_step(client)
    page = client.get("/mfa/enroll/webauthn?next=/account")
    assert page.status_code == 200 and 'data-webauthn="register"' in page.text
    assert "<script>" not in page.text  # no inline script (CSP)
    token = csrf_from(page.text)

    options = post_json(client, "/mfa/enroll/webauthn/options", {}, token).get_json()
    assert options["rp"] == {"id": RP_ID, "name": "Provider Identity"}
    assert options["user"]["name"] == "drsmith"
    assert options["user"]["id"] == bytes_to_base64url(user.subject.encode())
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["attestation"] == "none"
    assert options["excludeCredentials"] == []
    assert options["timeout"] == policy().mfa.code_lifetime * 1000
    assert {p["alg"] for p in options["pubKeyCredParams"]} >= {-7, -257}
    stored = db.session.execute(select(LoginAttempt.challenge).where(
        LoginAttempt.user_id == user.id, LoginAttempt.challenge.is_not(None))).scalar_one()
    assert stored.startswith("reg:") and stored.endswith(options["challenge"])

    key = SoftAuthenticator()
    done = post_json(client, "/mfa/enroll/webauthn?next=/account",
                     {"credential": key.create(options), "label": "Work\x00 laptop"}, token)
    assert done.status_code == 200, done.text
    assert done.get_json()["redirect"].startswith("/mfa/recovery-codes")
    factor = db.session.execute(select(Factor).where(Factor.kind == "webauthn")).scalar_one()
    assert factor.credential_id == key.id and factor.public_key == key.cose_key()
    assert factor.user_verified and factor.sign_count == 0 and not factor.clone_warning
    assert factor.transports == ["internal"] and factor.aaguid == str(
        __import__("uuid").UUID(bytes=AAGUID))
    assert factor.label == "Work laptop"
    assert [e.detail["factor"] for e in events("mfa.enrolled")] == ["webauthn"]
    assert any("Security key" in m["Subject"] or "sign-in methods" in m["Subject"]
               for m in mailbox.to(user.email))

    # Registering the same authenticator again: excluded in the options, refused if sent.
    again = post_json(client, "/mfa/enroll/webauthn/options", {}, token).get_json()
    assert [c["id"] for c in again["excludeCredentials"]] == [key.id]
    twice = post_json(client, "/mfa/enroll/webauthn", {"credential": key.create(again)}, token)
    assert twice.status_code == 409
    assert db.session.query(Factor).filter_by(kind="webauthn").count() == 1


def test_registration_refuses_without_user_verification_and_challenge_is_single_use(
        ctx, client):
    make_user()
    password_step(client)
    totp_step(client)
    token = csrf_from(client.get("/mfa/enroll/webauthn").text)
    options = post_json(client, "/mfa/enroll/webauthn/options", {}, token).get_json()
    key = SoftAuthenticator()
    refused = post_json(client, "/mfa/enroll/webauthn", {"credential": key.create(
        options, uv=False)}, token)
    assert refused.status_code == 400
    # The challenge went with the refused try: a correct response to it is too late now.
    late = post_json(client, "/mfa/enroll/webauthn", {"credential": key.create(options)}, token)
    assert late.status_code == 400 and "expired" in late.get_json()["error"]
    assert db.session.query(Factor).filter_by(kind="webauthn").count() == 0
    assert len(events("mfa.enroll_failure")) == 2


@pytest.mark.parametrize("tamper", ["origin", "rp_id"])
def test_registration_refuses_other_origin_or_rp(ctx, client, tamper):
    make_user()
    password_step(client)
    totp_step(client)
    token = csrf_from(client.get("/mfa/enroll/webauthn").text)
    options = post_json(client, "/mfa/enroll/webauthn/options", {}, token).get_json()
    bad = {"origin": "https://idp.test.evil.example"} if tamper == "origin" else \
        {"rp_id": "evil.example"}
    refused = post_json(client, "/mfa/enroll/webauthn",
                        {"credential": SoftAuthenticator().create(options, **bad)}, token)
    assert refused.status_code == 400
    assert db.session.query(Factor).filter_by(kind="webauthn").count() == 0


def test_enrollment_needs_a_recent_sign_in_and_csrf(ctx, client, frozen):
    make_user()
    password_step(client)
    totp_step(client)
    token = csrf_from(client.get("/mfa/enroll/webauthn").text)
    no_csrf = client.post("/mfa/enroll/webauthn/options", json={})
    assert no_csrf.status_code == 400
    frozen.advance(policy().mfa.reauth_window + 5)
    stale = post_json(client, "/mfa/enroll/webauthn/options", {}, token)
    assert stale.status_code == 401 and "/login" in stale.get_json()["redirect"]
    assert client.get("/mfa/enroll/webauthn").headers["Location"].startswith("/login")


def test_password_alone_cannot_enroll_in_place_of_the_second_step(ctx, client):
    make_user()  # has TOTP: the pending sign-in owes that step first
    password_step(client)
    assert client.get("/mfa/enroll/webauthn").headers["Location"] == "/mfa/challenge"
    token = token_of(client, "/mfa/challenge")
    refused = post_json(client, "/mfa/enroll/webauthn/options", {}, token)
    assert refused.status_code == 401
    assert not sessions_of(db.session.execute(select(User)).scalar_one())


def test_first_factor_enrollment_during_sign_in_finishes_it(ctx, client):
    user = make_user(totp=False)
    password_step(client)
    assert client.get("/mfa/challenge").headers["Location"] == "/mfa/enroll"
    assert "/mfa/enroll/webauthn" in client.get("/mfa/enroll").text
    token = csrf_from(client.get("/mfa/enroll/webauthn").text)
    options = post_json(client, "/mfa/enroll/webauthn/options", {}, token).get_json()
    done = post_json(client, "/mfa/enroll/webauthn",
                     {"credential": SoftAuthenticator().create(options)}, token)
    assert done.status_code == 200, done.text
    [sso] = sessions_of(user)
    assert sso.acr == PHR and sso.amr == ["pwd", "hwk", "user", "mfa"]


# -- second factor -------------------------------------------------------------------------
def test_second_factor_options_and_sign_in(ctx, client):
    user = make_user()
    key = SoftAuthenticator()
    factor = seed(user, key)
    password_step(client)
    token = challenge_token(client)
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    assert options["rpId"] == RP_ID and options["userVerification"] == "required"
    assert [(c["id"], c.get("transports")) for c in options["allowCredentials"]] == [
        (key.id, ["internal"])]
    done = post_json(client, "/mfa/webauthn/verify", {"credential": key.get(options)}, token)
    assert done.status_code == 200, done.text
    assert done.get_json() == {"redirect": "/account"}
    [sso] = sessions_of(user)
    assert sso.acr == PHR and sso.amr == ["pwd", "hwk", "user", "mfa"]
    db.session.refresh(factor)
    assert factor.sign_count == 1 and factor.last_used_at is not None
    assert [e.detail["factor"] for e in events("mfa.verified")] == ["webauthn"]


def test_assertion_without_user_verification_is_a_failed_sign_in(ctx, client):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    password_step(client)
    token = challenge_token(client)
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    refused = post_json(client, "/mfa/webauthn/verify",
                        {"credential": key.get(options, uv=False)}, token)
    assert refused.status_code == 400 and "could not be verified" in refused.get_json()["error"]
    assert failures(user) == 1 and not sessions_of(user)
    assert [e.detail["factor"] for e in events("mfa.failure")] == ["webauthn"]
    # The challenge is gone with the refused try: a good answer to it is refused too.
    late = post_json(client, "/mfa/webauthn/verify", {"credential": key.get(options)}, token)
    assert late.status_code == 400 and "expired" in late.get_json()["error"]
    assert not sessions_of(user)


def test_second_factor_refuses_another_users_credential_and_bad_signature(ctx, client):
    user = make_user()
    other = make_user("drjones", npi=None)
    mine, theirs = SoftAuthenticator(), SoftAuthenticator()
    seed(user, mine)
    seed(other, theirs)
    password_step(client)
    token = challenge_token(client)
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    assert [c["id"] for c in options["allowCredentials"]] == [mine.id]
    wrong = post_json(client, "/mfa/webauthn/verify", {"credential": theirs.get(options)}, token)
    assert wrong.status_code == 400
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    forged = mine.get(options)
    forged["response"]["signature"] = bytes_to_base64url(b"\x30\x06\x02\x01\x01\x02\x01\x01")
    assert post_json(client, "/mfa/webauthn/verify", {"credential": forged}, token
                     ).status_code == 400
    for junk in ({"credential": {"id": "a\x00"}},
                 {"credential": {"id": mine.id, "response": {"clientDataJSON": "%%"}}}):
        post_json(client, "/mfa/webauthn/options", {}, token)
        assert post_json(client, "/mfa/webauthn/verify", junk, token).status_code == 400
    assert failures(user) == 4 and not sessions_of(user)


def test_repeated_failures_lock_the_account(ctx, client, mailbox):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    password_step(client)
    token = challenge_token(client)
    limit = policy().lockout.max_failures
    for _ in range(limit - 1):
        options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
        assert post_json(client, "/mfa/webauthn/verify",
                         {"credential": key.get(options, uv=False)}, token).status_code == 400
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    last = post_json(client, "/mfa/webauthn/verify",
                     {"credential": key.get(options, uv=False)}, token)
    assert last.status_code == 401 and last.get_json()["redirect"] == "/login"
    db.session.expire_all()
    assert db.session.get(User, user.id).locked_until is not None
    assert any("locked" in m["Subject"] for m in mailbox.to(user.email))
    # The attempt is over: nothing more to answer.
    assert post_json(client, "/mfa/webauthn/options", {}, token).status_code == 401


def test_counter_regression_sets_clone_warning_and_refuses(ctx, client):
    user = make_user()
    key = SoftAuthenticator()
    factor = seed(user, key, sign_count=10)
    password_step(client)
    token = challenge_token(client)
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    cloned = post_json(client, "/mfa/webauthn/verify",
                       {"credential": key.get(options, count=10)}, token)
    assert cloned.status_code == 400 and "copied" in cloned.get_json()["error"]
    db.session.refresh(factor)
    assert factor.clone_warning and factor.sign_count == 10
    [warning] = events("mfa.webauthn_clone_warning")
    assert warning.user_id == user.id and warning.detail["factor_id"] == factor.id
    assert warning.detail["stored_count"] == 10 and warning.detail["received_count"] == 10
    assert failures(user) == 1 and not sessions_of(user)
    # From now on the credential is refused, even with a higher counter.
    again = post_json(client, "/mfa/webauthn/options", {}, token)
    assert again.status_code == 409 and "copied" in again.get_json()["error"]


@pytest.mark.parametrize("stored,received,ok", [(0, 0, True), (0, 5, True), (5, 6, True),
                                                 (5, 4, False), (5, 0, False)])
def test_sign_counter_rules(ctx, client, stored, received, ok):
    user = make_user()
    key = SoftAuthenticator()
    factor = seed(user, key, sign_count=stored)
    password_step(client)
    token = challenge_token(client)
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    done = post_json(client, "/mfa/webauthn/verify",
                     {"credential": key.get(options, count=received)}, token)
    assert (done.status_code == 200) is ok, done.text
    db.session.refresh(factor)
    assert factor.clone_warning is (not ok)
    assert factor.sign_count == (received if ok else stored)


def test_expired_challenge_is_refused(ctx, client, frozen):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    password_step(client)
    token = challenge_token(client)
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    frozen.advance(policy().mfa.code_lifetime + 1)
    late = post_json(client, "/mfa/webauthn/verify", {"credential": key.get(options)}, token)
    assert late.status_code == 400 and not sessions_of(user)
    assert failures(user) == 0  # stale, not wrong


def test_step_up_to_phishing_resistant_acr(ctx, client):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    rp = make_client()
    password_step(client)
    totp_step(client)
    [sso] = sessions_of(user)
    assert sso.acr == "urn:healthidp:acr:aal2"
    verifier, challenge = pkce()
    params = auth_params(rp, challenge, acr_values=PHR)
    response = client.get("/authorize?" + urlencode(params))
    assert response.headers["Location"] == "/mfa/challenge"
    page = client.get("/mfa/challenge")
    assert "stronger sign-in" in page.text and 'data-webauthn="authenticate"' in page.text
    token = csrf_from(page.text)
    options = post_json(client, "/mfa/webauthn/options", {}, token).get_json()
    done = post_json(client, "/mfa/webauthn/verify", {"credential": key.get(options)}, token)
    assert done.status_code == 200, done.text
    back = client.get(done.get_json()["redirect"])
    code = query(back.headers["Location"])["code"]
    body = exchange(client, rp, code, verifier).get_json()
    claims = jwt.decode(body["id_token"], KeySet.import_key_set(
        client.get("/jwks.json").get_json())).claims
    assert claims["acr"] == PHR and "hwk" in claims["amr"] and "otp" in claims["amr"]
    assert [e.detail["acr"] for e in events("mfa.stepup")] == [PHR]


# -- passkey -------------------------------------------------------------------------------
def passkey(http, key: SoftAuthenticator, *, next_url: str = "/account", **kw):
    token = token_of(http)
    options = post_json(http, "/mfa/passkey/options", {"next": next_url}, token).get_json()
    return options, post_json(http, "/mfa/passkey/verify",
                              {"credential": key.get(options, **kw)}, token), token


def test_login_page_offers_passkey(ctx, client):
    page = client.get("/login?next=/account")
    assert 'id="passkey-sign-in"' in page.text and 'data-webauthn="passkey"' in page.text
    assert '/static/js/webauthn.js' in page.text and "<script>" not in page.text


def test_passkey_sign_in_without_password(ctx, client):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    options, done, _ = passkey(client, key, next_url="/account?x=1")
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    assert options["rpId"] == RP_ID
    assert done.status_code == 200, done.text
    assert done.get_json() == {"redirect": "/account?x=1"}
    [sso] = sessions_of(user)
    assert sso.amr == ["hwk", "user"] and sso.acr == PHR
    [success] = events("login.success")
    assert success.detail["amr"] == ["hwk", "user"]
    assert client.get("/account").status_code == 200


def test_passkey_next_is_same_site_only(ctx, client):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    _, done, _ = passkey(client, key, next_url="https://evil.example/")
    assert done.get_json() == {"redirect": "/account"}
    assert sessions_of(user)


def test_passkey_refuses_without_user_verification(ctx, client):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    _, refused, _ = passkey(client, key, uv=False)
    assert refused.status_code == 400
    assert not sessions_of(user) and failures(user) == 1
    assert [e.detail.get("reason") for e in events("login.failure")] == ["passkey"]


def test_passkey_challenge_single_use(ctx, client):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    options, done, token = passkey(client, key)
    assert done.status_code == 200
    # The same browser again: the challenge left the flow cookie.
    replay = post_json(client, "/mfa/passkey/verify", {"credential": key.get(options)}, token)
    assert replay.status_code == 400
    assert len(sessions_of(user)) == 1


def test_passkey_replayed_flow_cookie_is_refused(ctx, client):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    token = token_of(client)
    options = post_json(client, "/mfa/passkey/options", {}, token).get_json()
    saved = client.get_cookie("idp_flow").value
    assertion = key.get(options)
    assert post_json(client, "/mfa/passkey/verify", {"credential": assertion},
                     token).status_code == 200
    attacker = ctx.test_client()
    attacker.set_cookie("idp_flow", saved)
    replay = post_json(attacker, "/mfa/passkey/verify", {"credential": assertion}, token)
    assert replay.status_code == 400 and "expired" in replay.get_json()["error"]
    assert len(sessions_of(user)) == 1


def test_passkey_unknown_credential_wrong_handle_locked_and_disabled(ctx, client):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    _, unknown, _ = passkey(client, SoftAuthenticator())
    assert unknown.status_code == 400
    _, wrong_handle, _ = passkey(client, key, user_handle=bytes_to_base64url(b"someone"))
    assert wrong_handle.status_code == 400
    user.locked_until = clock.now() + __import__("datetime").timedelta(minutes=5)
    db.session.commit()
    _, locked, _ = passkey(client, key)
    assert locked.status_code == 401
    user.locked_until = None
    user.disabled = True
    db.session.commit()
    _, disabled, _ = passkey(client, key)
    assert disabled.status_code == 401
    assert not sessions_of(user)


def test_passkey_expired_challenge(ctx, client, frozen):
    user = make_user()
    key = SoftAuthenticator()
    seed(user, key)
    token = token_of(client)
    options = post_json(client, "/mfa/passkey/options", {}, token).get_json()
    frozen.advance(policy().mfa.code_lifetime + 1)
    late = post_json(client, "/mfa/passkey/verify", {"credential": key.get(options)}, token)
    assert late.status_code == 400 and not sessions_of(user)


def test_passkey_csrf_required(ctx, client):
    make_user()
    client.get("/login")
    assert client.post("/mfa/passkey/options", json={}).status_code == 400
    assert client.post("/mfa/passkey/verify", json={}).status_code == 400


def test_policy_can_admit_only_listed_authenticator_models(ctx, client, monkeypatch):
    import dataclasses

    from idp.context import runtime

    rt = runtime()
    strict = dataclasses.replace(rt.policy.mfa.webauthn, attestation="direct",
                                 allowed_aaguids=("00000000-0000-0000-0000-00000000beef",))
    monkeypatch.setattr(rt, "policy", dataclasses.replace(
        rt.policy, mfa=dataclasses.replace(rt.policy.mfa, webauthn=strict)))
    make_user()
    password_step(client)
    totp_step(client)
    page = client.get("/mfa/enroll/webauthn?next=/account")
    token = csrf_from(page.text)
    options = post_json(client, "/mfa/enroll/webauthn/options", {}, token).get_json()
    assert options["attestation"] == "direct"
    refused = post_json(client, "/mfa/enroll/webauthn",
                        {"credential": SoftAuthenticator().create(options)}, token)
    assert refused.status_code == 400 and "does not allow" in refused.get_json()["error"]
    assert db.session.query(Factor).filter_by(kind="webauthn").count() == 0
