"""The file-backed key store: first start, RFC 7638 kids, public-only JWKS, rotation through
pending -> active -> retired -> expired, idempotent ensure(), and two nodes on one directory."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from idp import clock
from idp.keys.store import KeyStore

MAX_TOKEN_LIFETIME = 3600
DELAY = 600
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
# RFC 7638 §3.2: the required members of each key type, the only ones the thumbprint covers.
REQUIRED = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


class Time:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)
        monkeypatch.setattr(clock, "now", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def time(monkeypatch: pytest.MonkeyPatch) -> Time:
    return Time(monkeypatch)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "keys"


def store(directory: Path) -> KeyStore:
    return KeyStore(directory, ("RS256", "ES256"), 2048, MAX_TOKEN_LIFETIME)


def thumbprint(jwk: dict) -> str:
    members = {name: jwk[name] for name in REQUIRED[jwk["kty"]]}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def states(keys: KeyStore) -> dict[str, str]:
    return {s.kid: s.state for s in keys.statuses()}


def published(keys: KeyStore) -> set[str]:
    return {k["kid"] for k in keys.public_jwks()["keys"]}


def test_first_start_makes_one_key_per_algorithm(directory: Path, time: Time):
    keys = store(directory)
    keys.ensure()
    files = sorted(directory.glob("*.json"))
    assert len(files) == 2
    assert sorted(s.alg for s in keys.statuses()) == ["ES256", "RS256"]
    assert set(states(keys).values()) == {"active"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0
    for alg, kty in (("RS256", "RSA"), ("ES256", "EC")):
        signing = keys.signing_key(alg)
        assert signing.alg == alg and signing.key.as_dict()["kty"] == kty
        assert signing.active_at == time.now
    assert keys.signing_key("RS256").key.as_dict()["n"]  # a real RSA key
    assert len(base64.urlsafe_b64decode(keys.signing_key("RS256").key.as_dict()["n"] + "==")) \
        == 2048 // 8


def test_kid_is_the_rfc7638_thumbprint(directory: Path, time: Time):
    keys = store(directory)
    keys.ensure()
    jwks = keys.public_jwks()["keys"]
    assert len(jwks) == 2
    for jwk in jwks:
        assert jwk["kid"] == thumbprint(jwk)
        assert (directory / f"{jwk['kid']}.json").exists()
        stored = json.loads((directory / f"{jwk['kid']}.json").read_text())
        assert stored["kid"] == thumbprint(stored["jwk"])  # private members do not change it


def test_jwks_has_public_members_only(directory: Path, time: Time):
    keys = store(directory)
    keys.ensure()
    keys.rotate(DELAY)
    jwks = keys.public_jwks()
    assert len(jwks["keys"]) == 4
    for jwk in jwks["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk), jwk
        assert jwk["use"] == "sig" and jwk["alg"] in ("RS256", "ES256") and jwk["kid"]
    on_disk = json.loads(next(directory.glob("*.json")).read_text())["jwk"]
    assert "d" in on_disk  # the file is the private key; only the document is public


def test_rotation_lifecycle(directory: Path, time: Time):
    keys = store(directory)
    keys.ensure()
    old = {alg: keys.signing_key(alg).kid for alg in ("RS256", "ES256")}

    created = keys.rotate(DELAY)
    assert len(created) == 2 and not set(created) & set(old.values())
    new = {s.alg: s.kid for s in keys.statuses() if s.kid in created}
    # published at once, signing only after the delay: RPs fetch it before its first token
    assert {states(keys)[k] for k in created} == {"pending"}
    assert {states(keys)[k] for k in old.values()} == {"active"}
    assert published(keys) == set(old.values()) | set(created)
    assert {alg: keys.signing_key(alg).kid for alg in old} == old

    time.advance(DELAY - 1)
    assert {alg: keys.signing_key(alg).kid for alg in old} == old

    time.advance(1)
    assert {alg: keys.signing_key(alg).kid for alg in old} == new
    assert {states(keys)[k] for k in old.values()} == {"retired"}
    assert published(keys) == set(old.values()) | set(created)  # old tokens still verify
    retired = {s.kid: s for s in keys.statuses() if s.kid in old.values()}
    for status in retired.values():
        assert status.retired_at == time.now
        assert status.unpublish_at == time.now + timedelta(seconds=MAX_TOKEN_LIFETIME)

    time.advance(MAX_TOKEN_LIFETIME - 1)
    assert published(keys) == set(old.values()) | set(created)

    time.advance(1)
    assert {states(keys)[k] for k in old.values()} == {"expired"}
    assert published(keys) == set(created)
    assert {k.kid for k in keys.verification_keys().keys} == set(created)
    assert {alg: keys.signing_key(alg).kid for alg in old} == new
    # expired keys stay on disk until the next rotation prunes them
    assert all((directory / f"{kid}.json").exists() for kid in old.values())
    keys.rotate(DELAY)
    assert not any((directory / f"{kid}.json").exists() for kid in old.values())


def test_rotation_of_one_algorithm(directory: Path, time: Time):
    keys = store(directory)
    keys.ensure()
    rs = keys.signing_key("RS256").kid
    time.advance(1)
    (created,) = keys.rotate(0, ("ES256",))
    assert keys.signing_key("ES256").kid == created
    assert keys.signing_key("RS256").kid == rs


def test_ensure_is_idempotent(directory: Path, time: Time):
    keys = store(directory)
    keys.ensure()
    before = sorted(p.name for p in directory.glob("*.json"))
    keys.ensure()
    store(directory).ensure()
    assert sorted(p.name for p in directory.glob("*.json")) == before
    keys.rotate(DELAY)
    keys.ensure()
    assert len(list(directory.glob("*.json"))) == 4


def test_a_second_node_sees_a_rotation_made_by_the_first(directory: Path, time: Time):
    first, second = store(directory), store(directory)
    first.ensure()
    second.ensure()                                        # no second set of keys
    assert len(list(directory.glob("*.json"))) == 2
    assert published(second) == published(first)
    old = second.signing_key("RS256").kid                 # cached by the second node now

    created = set(first.rotate(DELAY))
    assert created <= published(second)                   # the second node publishes it too
    assert second.signing_key("RS256").kid == old
    time.advance(DELAY)
    assert second.signing_key("RS256").kid in created
    assert second.signing_key("RS256").kid == first.signing_key("RS256").kid
    time.advance(MAX_TOKEN_LIFETIME)
    first.rotate(DELAY)                                    # prunes the expired keys
    assert old not in published(second)
    assert published(second) == published(first)


def test_memoised_states_change_at_activation_and_unpublication(directory: Path, time: Time):
    """statuses() is memoised between the moments a state can change; moving the clock over
    such a moment, or back before the memo was made, recomputes it."""
    store = KeyStore(directory, ("ES256",), 2048, MAX_TOKEN_LIFETIME)
    store.ensure()
    old = store.signing_key("ES256").kid
    (new,) = store.rotate(DELAY, ("ES256",))
    assert store.signing_key("ES256").kid == old  # pending for DELAY seconds
    time.advance(DELAY - 1)
    assert store.signing_key("ES256").kid == old
    time.advance(1)
    assert store.signing_key("ES256").kid == new  # activated: memo invalid at that moment
    assert {k.kid for k in store.published()} == {old, new}
    time.advance(MAX_TOKEN_LIFETIME)
    assert {k.kid for k in store.published()} == {new}  # the old key left JWKS on time
    time.advance(-MAX_TOKEN_LIFETIME - DELAY)
    assert store.signing_key("ES256").kid == old  # earlier than the memo: recomputed
