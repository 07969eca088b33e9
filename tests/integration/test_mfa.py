"""Second factors over the test client: TOTP, SMS (outbox), email (real SMTP), recovery codes,
step-up, and the acr/amr each path yields."""

import re
from urllib.parse import urlencode

import pyotp
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from idp import clock
from idp.extensions import db
from idp.mfa.models import Factor
from idp.notify.models import SmsOutbox
from tests.helpers import (
    PASSWORD,
    auth_params,
    csrf_from,
    exchange,
    forget_totp_use,
    login,
    make_client,
    make_user,
    pkce,
    query,
    totp_now,
)


def _password_only(client, username="drsmith"):
    response = login(client, username, mfa=False)
    assert response.headers["Location"] == "/mfa/challenge"
    return response


def _submit(client, url, data):
    page = client.get(url)
    return client.post(url, data={**data, "csrf_token": csrf_from(page.text)})


def _id_token_claims(client, rp, **extra) -> dict:
    verifier, challenge = pkce()
    params = auth_params(rp, challenge, **extra)
    response = client.get("/authorize?" + urlencode(params))
    code = query(response.headers["Location"])["code"]
    body = exchange(client, rp, code, verifier).get_json()
    keys = KeySet.import_key_set(client.get("/jwks.json").get_json())
    return jwt.decode(body["id_token"], keys).claims


def _add_code_factor(user, kind: str, destination: str) -> Factor:
    factor = Factor(user_id=user.id, kind=kind, label=kind, created_at=clock.now(),
                    confirmed_at=clock.now(), destination=destination)
    db.session.add(factor)
    db.session.commit()
    return factor


def _last_sms(to: str) -> str:
    body = db.session.execute(select(SmsOutbox.body).where(SmsOutbox.to == to)
                              .order_by(SmsOutbox.id.desc())).scalars().first()
    return re.search(r"\b(\d{6})\b", body).group(1)


# -- TOTP ------------------------------------------------------------------------------------
def test_totp_enrollment_then_login(ctx, client, mailbox):
    user = make_user(totp=False)
    _password_only(client)
    assert client.get("/mfa/challenge").headers["Location"] == "/mfa/enroll"
    page = client.get("/mfa/enroll/totp")
    assert "<svg" in page.text  # QR drawn locally
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)
    wrong = client.post("/mfa/enroll/totp", data={"code": "000000",
                                                 "csrf_token": csrf_from(page.text)})
    assert wrong.status_code == 400
    done = client.post("/mfa/enroll/totp", data={"code": pyotp.TOTP(secret).at(clock.now()),
                                                "csrf_token": csrf_from(page.text)})
    assert done.headers["Location"].startswith("/mfa/recovery-codes")
    codes_page = client.get(done.headers["Location"])
    assert len(re.findall(r"<li><code>", codes_page.text)) == 10
    assert client.get("/mfa/recovery-codes").status_code == 302  # shown once
    assert client.get("/account").status_code == 200  # signed in
    stored = db.session.execute(select(Factor).where(Factor.user_id == user.id)).scalar_one()
    assert secret not in (stored.secret_encrypted or "")  # encrypted at rest
    assert any("sign-in methods changed" in m["Subject"] for m in mailbox.to(user.email))


def test_totp_code_replay_is_refused(ctx, client):
    make_user()
    _password_only(client)
    code = totp_now("drsmith")
    ok = _submit(client, "/mfa/challenge", {"code": code})
    assert ok.status_code == 302
    other = ctx.test_client()
    _password_only(other)
    replay = _submit(other, "/mfa/challenge", {"code": code})
    assert replay.status_code == 400 and "not right" in replay.text


def test_totp_accepts_one_step_of_drift_only(ctx, client, frozen):
    make_user()
    from tests.helpers import TOTP_SECRETS

    totp = pyotp.TOTP(TOTP_SECRETS["drsmith"])
    _password_only(client)
    old = totp.at(clock.now(), counter_offset=-2)
    assert _submit(client, "/mfa/challenge", {"code": old}).status_code == 400
    previous = totp.at(clock.now(), counter_offset=-1)
    assert _submit(client, "/mfa/challenge", {"code": previous}).status_code == 302


def test_wrong_codes_count_toward_lockout(ctx, client):
    user = make_user()
    _password_only(client)
    for _ in range(4):
        assert _submit(client, "/mfa/challenge", {"code": "000000"}).status_code == 400
    locked = _submit(client, "/mfa/challenge", {"code": "000000"})
    assert locked.status_code == 401
    db.session.refresh(user)
    assert user.locked_until is not None
    # the right password and code are now refused too
    assert login(ctx.test_client()).status_code == 401


def test_password_success_does_not_reset_failed_code_guesses(ctx, client):
    user = make_user()
    for _ in range(3):
        _password_only(client)
        _submit(client, "/mfa/challenge", {"code": "000000"})
    db.session.refresh(user)
    assert user.failed_logins == 3


def test_an_account_locked_between_password_and_code_is_not_signed_in(ctx, client):
    """Failures elsewhere lock the account after its password step: the right code then
    completes nothing (the completion is refused in the same statement that checks the lock),
    no session, no login.success; once a correct sign-in succeeds the count is reset."""
    from datetime import timedelta

    from sqlalchemy import func, update

    from idp.accounts.models import User
    from idp.audit.models import AuditEvent
    from idp.mfa.models import LoginAttempt

    user = make_user()
    _password_only(client)
    db.session.execute(update(User).where(User.id == user.id).values(
        failed_logins=5, locked_until=clock.now() + timedelta(minutes=30)))
    db.session.commit()
    done = _submit(client, "/mfa/challenge", {"code": totp_now("drsmith")})
    assert done.status_code == 302 and done.headers["Location"] == "/account"
    assert "/login" in client.get("/account").headers["Location"]
    assert db.session.scalar(select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.user_id == user.id, LoginAttempt.completed_at.is_not(None))) == 0
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.user_id == user.id, AuditEvent.event == "login.success")) == 0
    # unlocked (but failures still counted): a full sign-in succeeds and resets the count
    db.session.execute(update(User).where(User.id == user.id).values(locked_until=None))
    db.session.commit()
    forget_totp_use("drsmith")  # the code's time step was used up above
    other = ctx.test_client()
    assert login(other).status_code == 302
    db.session.refresh(user)
    assert user.failed_logins == 0 and user.locked_until is None


# -- SMS and email ---------------------------------------------------------------------------
def test_sms_code_via_outbox_then_expiry_and_resend_cooldown(ctx, client, frozen):
    user = make_user(totp=False)
    _add_code_factor(user, "sms", "+12025550123")
    _password_only(client)
    page = client.get("/mfa/challenge")
    assert "We sent a code" in page.text
    first = _last_sms("+12025550123")
    resend = client.post("/mfa/challenge", data={"action": "resend",
                                                 "csrf_token": csrf_from(page.text)})
    assert "ask for a new one in" in resend.text  # cool-down
    frozen.advance(301)  # the code lives 5 minutes
    expired = _submit(client, "/mfa/challenge", {"code": first})
    assert expired.status_code == 400
    page = client.get("/mfa/challenge")
    again = client.post("/mfa/challenge", data={"action": "resend",
                                                "csrf_token": csrf_from(page.text)})
    assert "We sent a code" in again.text
    second = _last_sms("+12025550123")
    done = _submit(client, "/mfa/challenge", {"code": second})
    assert done.status_code == 302
    assert client.get("/account").status_code == 200
    # a code belongs to its login attempt: it does not open another one
    other = ctx.test_client()
    _password_only(other)
    assert _submit(other, "/mfa/challenge", {"code": second}).status_code == 400


def test_email_code_from_smtp_and_its_assurance(ctx, client, mailbox):
    user = make_user(totp=False)
    _add_code_factor(user, "email", user.email)
    rp = make_client()
    _password_only(client)
    client.get("/mfa/challenge")
    message = [m for m in mailbox.to(user.email) if "sign-in code" in m["Subject"]][-1]
    code = re.search(r"\b(\d{6})\b", mailbox.body(message)).group(1)
    assert _submit(client, "/mfa/challenge", {"code": code}).status_code == 302
    claims = _id_token_claims(client, rp)
    assert claims["acr"] == "urn:healthidp:acr:aal1"  # email is not an out-of-band factor
    assert claims["amr"] == ["pwd", "otp", "mfa"]


def test_switch_to_the_other_channel(ctx, client, mailbox):
    user = make_user()
    sms = _add_code_factor(user, "sms", "+12025550123")
    _password_only(client)
    page = client.get("/mfa/challenge")
    assert "authenticator app" in page.text and f"factor={sms.id}" in page.text
    switched = client.get(f"/mfa/challenge?factor={sms.id}")
    assert "Text message" in switched.text or "text message" in switched.text
    done = _submit(client, f"/mfa/challenge?factor={sms.id}",
                   {"code": _last_sms("+12025550123"), "factor": sms.id})
    assert done.status_code == 302


def test_code_guesses_are_capped_per_code(ctx, client):
    user = make_user(totp=False)
    _add_code_factor(user, "sms", "+12025550123")
    _password_only(client)
    client.get("/mfa/challenge")
    code = _last_sms("+12025550123")
    from idp.accounts import lockout
    from idp.mfa.models import OneTimeCode

    for _ in range(5):
        _submit(client, "/mfa/challenge", {"code": "999999" if code != "999999" else "111111"})
        lockout.unlock(user)  # isolate the per-code cap from the account lockout
        db.session.commit()
    item = db.session.execute(select(OneTimeCode)).scalar_one()
    assert item.attempts == 5
    assert _submit(client, "/mfa/challenge", {"code": code}).status_code == 400


def test_phone_numbers_are_validated_and_normalised(ctx, client):
    make_user(totp=False)
    _password_only(client)
    bad = _submit(client, "/mfa/enroll/sms", {"step": "destination", "phone": "12345"})
    assert bad.status_code == 400
    good = _submit(client, "/mfa/enroll/sms", {"step": "destination",
                                               "phone": "(202) 555-0123"})
    assert good.status_code == 200 and "•••0123" in good.text
    code = _last_sms("+12025550123")
    confirmed = client.post("/mfa/enroll/sms", data={"step": "confirm", "code": code,
                                                     "csrf_token": csrf_from(good.text)})
    assert confirmed.headers["Location"].startswith("/mfa/recovery-codes")


# -- recovery codes --------------------------------------------------------------------------
def test_recovery_code_single_use(ctx, client, mailbox):
    user = make_user()
    from idp.mfa.factors import recovery

    codes = recovery.generate(user)
    db.session.commit()
    _password_only(client)
    used = _submit(client, "/mfa/recovery", {"code": codes[0].lower()})
    assert used.headers["Location"].startswith("/mfa/enroll")  # prompted to add a factor
    assert any("recovery code" in m["Subject"] for m in mailbox.to(user.email))
    other = ctx.test_client()
    _password_only(other)
    again = _submit(other, "/mfa/recovery", {"code": codes[0]})
    assert again.status_code == 400
    assert recovery.remaining(user) == 9


# -- assurance -------------------------------------------------------------------------------
def test_step_up_from_email_code_to_totp(ctx, client, mailbox):
    user = make_user()
    _add_code_factor(user, "email", user.email)
    rp = make_client()
    _password_only(client)
    email_factor = db.session.execute(select(Factor).where(Factor.kind == "email")).scalar_one()
    client.get(f"/mfa/challenge?factor={email_factor.id}")
    message = [m for m in mailbox.to(user.email) if "sign-in code" in m["Subject"]][-1]
    code = re.search(r"\b(\d{6})\b", mailbox.body(message)).group(1)
    _submit(client, f"/mfa/challenge?factor={email_factor.id}",
            {"code": code, "factor": email_factor.id})
    verifier, challenge = pkce()
    params = auth_params(rp, challenge, acr_values="urn:healthidp:acr:aal2")
    response = client.get("/authorize?" + urlencode(params))
    assert response.headers["Location"] == "/mfa/challenge"
    page = client.get("/mfa/challenge")
    assert "stronger sign-in" in page.text and "Email code" not in page.text.split("<h2>")[0]
    done = _submit(client, "/mfa/challenge", {"code": totp_now("drsmith")})
    final = client.get(done.headers["Location"])
    code = query(final.headers["Location"])["code"]
    body = exchange(client, rp, code, verifier).get_json()
    claims = jwt.decode(body["id_token"], KeySet.import_key_set(
        client.get("/jwks.json").get_json())).claims
    assert claims["acr"] == "urn:healthidp:acr:aal2" and "otp" in claims["amr"]


def test_unreachable_acr_is_unmet_authentication_requirements(ctx, client):
    make_user()
    rp = make_client()
    login(client)
    verifier, challenge = pkce()
    params = auth_params(rp, challenge, acr_values="urn:healthidp:acr:aal2-phr")
    response = client.get("/authorize?" + urlencode(params))
    got = query(response.headers["Location"])
    assert got["error"] == "unmet_authentication_requirements"


def test_prompt_none_with_step_up_needed_is_interaction_required(ctx, client, mailbox):
    user = make_user(totp=False)
    _add_code_factor(user, "email", user.email)
    from tests.helpers import enroll_totp

    enroll_totp(user)
    db.session.commit()
    rp = make_client()
    _password_only(client)
    email_factor = db.session.execute(select(Factor).where(Factor.kind == "email")).scalar_one()
    client.get(f"/mfa/challenge?factor={email_factor.id}")
    message = [m for m in mailbox.to(user.email) if "sign-in code" in m["Subject"]][-1]
    code = re.search(r"\b(\d{6})\b", mailbox.body(message)).group(1)
    _submit(client, f"/mfa/challenge?factor={email_factor.id}",
            {"code": code, "factor": email_factor.id})
    params = auth_params(rp, pkce()[1], acr_values="urn:healthidp:acr:aal2", prompt="none")
    response = client.get("/authorize?" + urlencode(params))
    assert query(response.headers["Location"])["error"] == "interaction_required"


@pytest.mark.parametrize("kind,acr", [("totp", "urn:healthidp:acr:aal2")])
def test_totp_path_claims(ctx, client, kind, acr):
    make_user()
    rp = make_client()
    login(client)
    claims = _id_token_claims(client, rp)
    assert claims["acr"] == acr and claims["amr"] == ["pwd", "otp", "mfa"]
    assert PASSWORD not in str(claims)


@pytest.mark.parametrize("path", ["/mfa/enroll", "/mfa/enroll/totp", "/mfa/enroll/sms",
                                  "/mfa/enroll/email"])
def test_password_alone_cannot_enroll_a_new_factor(ctx, client, path):
    """Regression: a login attempt of a user who HAS a factor must pass it, not add one."""
    user = make_user()
    _password_only(client)
    page = client.get(path)
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    token = csrf_from(client.get("/mfa/challenge").text)  # a valid form: refused all the same
    forced = client.post("/mfa/enroll/totp", data={"code": "123456", "csrf_token": token})
    assert forced.status_code == 302 and "/login" in forced.headers["Location"]
    assert client.get("/account").status_code == 302  # still not signed in
    assert db.session.execute(select(Factor).where(Factor.user_id == user.id)).scalars().all()\
        .__len__() == 1


def test_enrollment_sign_in_resets_the_failure_count(ctx, client):
    user = make_user(totp=False)
    login(client, password="wrong-password-x")
    db.session.refresh(user)
    assert user.failed_logins == 1
    _password_only(client)
    page = client.get("/mfa/enroll/totp")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)
    client.post("/mfa/enroll/totp", data={"code": pyotp.TOTP(secret).at(clock.now()),
                                         "csrf_token": csrf_from(page.text)})
    db.session.refresh(user)
    assert user.failed_logins == 0
