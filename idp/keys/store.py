"""File-backed signing key store.

Each key is one JSON file `<kid>.json` (mode 0600) holding the private JWK and two times:
`created_at` (published from then on) and `active_at` (signs from then on). A key's state is
derived from those times and from its successor, so nodes sharing the directory agree without
coordination:

- pending: published, not yet signing (a rotation's activation delay);
- active: the newest key of its algorithm whose `active_at` has passed; it signs;
- retired: a newer key signs now; still published until every token it signed has expired;
- expired: no live token can carry it; left out of the JWKS and removed at the next rotation.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from joserfc.jwk import ECKey, KeySet, RSAKey

from idp import clock

Key = RSAKey | ECKey
RECHECK = 30.0  # seconds
_FOREVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StoredKey:
    kid: str
    alg: str
    created_at: datetime
    active_at: datetime
    key: Key


@dataclass(frozen=True)
class KeyStatus:
    kid: str
    alg: str
    state: str
    created_at: datetime
    active_at: datetime
    retired_at: datetime | None
    unpublish_at: datetime | None


def _generate(alg: str, rsa_size: int) -> Key:
    if alg == "RS256":
        return RSAKey.generate_key(rsa_size, private=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    raise ValueError(f"unsupported algorithm {alg}")


def _import(alg: str, jwk: dict) -> Key:
    return RSAKey.import_key(jwk) if alg == "RS256" else ECKey.import_key(jwk)


class KeyStore:
    """Reads the key directory, re-reading it whenever a key file is added or removed."""

    def __init__(self, directory: Path, algorithms: tuple[str, ...], rsa_key_size: int,
                 max_token_lifetime: int) -> None:
        self.directory = Path(directory)
        self.algorithms = algorithms
        self.rsa_key_size = rsa_key_size
        self.max_token_lifetime = timedelta(seconds=max_token_lifetime)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: list[StoredKey] = []
        self._loaded_at = 0.0
        self._memo: tuple[list[StoredKey], datetime, datetime, list[KeyStatus]] | None = None

    # -- files -----------------------------------------------------------------------------
    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, stored: StoredKey) -> None:
        data = {
            "kid": stored.kid,
            "alg": stored.alg,
            "created_at": stored.created_at.isoformat(),
            "active_at": stored.active_at.isoformat(),
            "jwk": stored.key.as_dict(private=True),
        }
        tmp = self.directory / f".{stored.kid}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, self.directory / f"{stored.kid}.json")

    def _stamp_now(self) -> tuple[int, int]:
        stat = self.directory.stat()
        return stat.st_mtime_ns, stat.st_ino

    def _load(self) -> list[StoredKey]:
        keys = []
        for path in sorted(self.directory.glob("*.json")):
            data = json.loads(path.read_text())
            keys.append(StoredKey(
                kid=data["kid"], alg=data["alg"],
                created_at=datetime.fromisoformat(data["created_at"]),
                active_at=datetime.fromisoformat(data["active_at"]),
                key=_import(data["alg"], data["jwk"]),
            ))
        return keys

    def keys(self) -> list[StoredKey]:
        """All keys on disk, cached until the directory changes (a rotation on any node).

        The directory's mtime is the signal; it is also re-read every RECHECK seconds, for
        shared filesystems whose timestamps are coarse or cached (NFS).
        """
        stamp = self._stamp_now()
        if time.monotonic() - self._loaded_at > RECHECK:
            self._stamp = None
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._keys = self._load()
                    self._stamp = stamp
                    self._loaded_at = time.monotonic()
        return self._keys

    # -- lifecycle -------------------------------------------------------------------------
    def ensure(self) -> None:
        """First start: create one immediately-active key per configured algorithm."""
        with self._file_lock():
            present = {k.alg for k in self._load()}
            for alg in self.algorithms:
                if alg not in present:
                    self._create(alg, delay=timedelta(0))
        self._stamp = None

    def _create(self, alg: str, delay: timedelta) -> StoredKey:
        key = _generate(alg, self.rsa_key_size)
        kid = key.thumbprint()
        key = _import(alg, {**key.as_dict(private=True), "kid": kid, "alg": alg, "use": "sig"})
        now = clock.now()
        stored = StoredKey(kid=kid, alg=alg, created_at=now, active_at=now + delay, key=key)
        self._write(stored)
        return stored

    def rotate(self, delay_seconds: int, algorithms: tuple[str, ...] | None = None) -> list[str]:
        """Publish a new key per algorithm, signing after `delay_seconds`; prune expired keys."""
        created = []
        with self._file_lock():
            for alg in algorithms or self.algorithms:
                created.append(self._create(alg, timedelta(seconds=delay_seconds)).kid)
            for status in self._statuses(self._load()):
                if status.state == "expired":
                    (self.directory / f"{status.kid}.json").unlink(missing_ok=True)
        self._stamp = None
        return created

    # -- state -----------------------------------------------------------------------------
    def _statuses(self, keys: list[StoredKey]) -> list[KeyStatus]:
        now = clock.now()
        result = []
        for alg in sorted({k.alg for k in keys}):
            ordered = sorted((k for k in keys if k.alg == alg),
                             key=lambda k: (k.active_at, k.created_at, k.kid))
            started = [k for k in ordered if k.active_at <= now]
            active = started[-1] if started else None
            for index, key in enumerate(ordered):
                successor = ordered[index + 1] if index + 1 < len(ordered) else None
                retired_at = successor.active_at if successor else None
                unpublish_at = retired_at + self.max_token_lifetime if retired_at else None
                if key is active:
                    state = "active"
                elif key.active_at > now:
                    state = "pending"
                elif unpublish_at and unpublish_at <= now:
                    state = "expired"
                else:
                    state = "retired"
                result.append(KeyStatus(key.kid, alg, state, key.created_at, key.active_at,
                                        retired_at, unpublish_at))
        return result

    def _current(self) -> tuple[list[StoredKey], list[KeyStatus]]:
        """The keys and their states, memoised per loaded key list until the next moment a
        state can change (a key's activation or unpublication): signing and JWKS ask on
        every request."""
        keys, now = self.keys(), clock.now()
        memo = self._memo
        if memo is not None and memo[0] is keys and memo[1] <= now < memo[2]:
            return keys, memo[3]
        statuses = self._statuses(keys)
        moments = [t for s in statuses for t in (s.active_at, s.unpublish_at)
                   if t is not None and t > now]
        self._memo = (keys, now, min(moments, default=_FOREVER), statuses)
        return keys, statuses

    def statuses(self) -> list[KeyStatus]:
        return self._current()[1]

    def signing_key(self, alg: str) -> StoredKey:
        keys, statuses = self._current()
        by_kid = {k.kid: k for k in keys}
        for status in statuses:
            if status.alg == alg and status.state == "active":
                return by_kid[status.kid]
        raise LookupError(f"no active {alg} signing key")

    def published(self) -> list[StoredKey]:
        keys, statuses = self._current()
        by_kid = {k.kid: k for k in keys}
        return [by_kid[s.kid] for s in statuses if s.state != "expired"]

    def public_jwks(self) -> dict:
        """The JWKS document: public parts only of every published key."""
        return {"keys": [k.key.as_dict(private=False) for k in self.published()]}

    def verification_keys(self) -> KeySet:
        return KeySet([k.key for k in self.published()])
