"""passwords.problems: each rule of policies/password.toml, in words a person can act on; both
shipped profiles (the provider guide's composition rules, NIST SP 800-63B's length only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from idp.accounts.models import User
from idp.accounts.passwords import problems
from idp.config import POLICY_DIR
from idp.context import Runtime
from idp.policy import load_policy

STRONG = "Granite-Orchid-Velvet-93?"


def _app(profile: str) -> Flask:
    app = Flask(__name__)
    pol = load_policy(POLICY_DIR, {"password": {"profile": profile}})
    app.extensions["idp"] = Runtime(None, pol, None, None, "")
    return app


@pytest.fixture
def guide() -> Iterator[None]:
    with _app("guide").app_context():
        yield


@pytest.fixture
def nist() -> Iterator[None]:
    with _app("nist-800-63b").app_context():
        yield


def test_a_strong_password_breaks_no_rule(guide):
    assert problems(STRONG) == []


@pytest.mark.parametrize(("password", "rule"), [
    ("Sh0rt!pw", "at least 12 characters"),
    ("x" * 129, "at most 128 characters"),
    ("granite-orchid-velvet-93?", "upper-case letter"),
    ("GRANITE-ORCHID-VELVET-93?", "lower-case letter"),
    ("Granite-Orchid-Velvet-xy?", "digit"),
    ("GraniteOrchidVelvet93x", "symbol"),
    ("Password123!", "too easy to guess"),
])
def test_each_composition_rule_names_itself(guide, password, rule):
    found = problems(password)
    assert any(rule in p for p in found), found


def test_the_account_s_own_words_are_refused(guide):
    user = User(username="ada.lovelace", given_name="Ada", family_name="Lovelace",
                email="ada@example.org", npi="1234567893")
    found = problems("Lovelace-Orchid-93?", user, check_history=False)
    assert found == ["Do not use your name, username, NPI or email address in it."]
    assert problems(STRONG, user, check_history=False) == []


def test_nist_profile_asks_length_and_strength_not_composition(nist):
    assert problems("granite orchid velvet lantern") == []  # no digit, upper or symbol
    assert any("at least 15 characters" in p for p in problems("Gr4nite-Orch!d"))
    assert any("too easy to guess" in p for p in problems("passwordpassword"))


def test_a_long_passphrase_is_judged_not_crashed_on(guide):
    """Regression: zxcvbn raises ValueError past 72 characters; a 73-128 character password
    (allowed by max_length) made problems() raise, a 500 on every password form."""
    long = "Granite orchid velvet 93? lantern harbor ember quill, " * 2
    assert 72 < len(long) <= 128
    assert problems(long) == []
    assert any("too easy to guess" in p for p in problems("Aa1!" + "a" * 100))
