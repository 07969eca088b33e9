"""OpenID Connect Back-Channel Logout 1.0, the relying party's side.

LogoutTokenVerifier checks a logout token as §2.6 asks: signature with the IdP's JWKS (RS256 or
ES256 only), `typ: logout+jwt`, iss, aud (this client), iat (recent), exp, the back-channel
logout event, no nonce, a sid or a sub, and a jti.

LogoutStore is the small server-side record the RP keeps because its sessions are cookies: the
sids (or subjects) the IdP ended, checked on every request, and the jtis already seen (replay).
It is one SQLite file shared by the RP's gunicorn workers; each write is one atomic statement.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from joserfc.errors import ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwt import JWTClaimsRegistry

from clients.jwks import IssuerKeys

log = logging.getLogger(__name__)

EVENT = "http://schemas.openid.net/event/backchannel-logout"
TYP = ("logout+jwt", "application/logout+jwt")
LEEWAY = 30         # seconds of clock skew tolerated
MAX_AGE = 300       # a logout token issued longer ago than this is refused (iat)
MAX_TOKEN = 8192


class LogoutTokenError(Exception):
    """The logout token cannot be accepted; str() is safe to send back (no token data)."""


class LogoutTokenVerifier(IssuerKeys):
    def __init__(self, issuer: str, client_id: str,
                 http_get: Callable[..., requests.Response] = requests.get) -> None:
        super().__init__(issuer, http_get)
        self.client_id = client_id

    def verify(self, token: str | None, now: float | None = None) -> dict[str, Any]:
        """The claims of a valid logout token; LogoutTokenError otherwise (KeysUnavailable
        when the IdP's keys cannot be fetched: the IdP should retry later)."""
        if not token or len(token) > MAX_TOKEN or token.count(".") != 2:
            raise LogoutTokenError("logout_token is missing or malformed")
        try:
            decoded = self.decode(token)
        except InvalidKeyIdError:
            raise LogoutTokenError("logout token signed with an unknown key") from None
        except (JoseError, ValueError, TypeError) as exc:
            raise LogoutTokenError(
                f"logout token signature or format invalid ({type(exc).__name__})") from None
        if str(decoded.header.get("typ", "")).lower() not in TYP:
            raise LogoutTokenError("not a logout token (typ)")
        claims = decoded.claims
        registry = JWTClaimsRegistry(
            now=int(now) if now is not None else None, leeway=LEEWAY,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.client_id},
            iat={"essential": True}, exp={"essential": True}, jti={"essential": True})
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise LogoutTokenError("logout token expired") from None
        except JoseError as exc:
            raise LogoutTokenError(f"claim check failed: {exc.description}") from None
        current = time.time() if now is None else now
        iat = claims["iat"]
        if not isinstance(iat, int | float) or iat < current - MAX_AGE - LEEWAY:
            raise LogoutTokenError("logout token issued too long ago (iat)")
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(EVENT), dict):
            raise LogoutTokenError("logout token lacks the back-channel logout event")
        if "nonce" in claims:
            raise LogoutTokenError("a logout token must not carry a nonce")
        sid, sub = claims.get("sid"), claims.get("sub")
        if not (isinstance(sid, str) and sid) and not (isinstance(sub, str) and sub):
            raise LogoutTokenError("logout token names neither sid nor sub")
        for name in ("sid", "sub"):
            if name in claims and not (isinstance(claims[name], str) and claims[name]):
                raise LogoutTokenError(f"logout token {name} is not a string")
        if not isinstance(claims["jti"], str) or not 0 < len(claims["jti"]) <= 256:
            raise LogoutTokenError("logout token jti is not a string")
        return claims


class LogoutStore:
    """Ended sessions and seen logout tokens, in one SQLite file (the RP's instance dir).

    `retention`: how long an ended sid is kept; RP sessions older than that end anyway
    (rp.SESSION_MAX_AGE), so a pruned record cannot bring one back."""

    def __init__(self, path: Path | str, retention: int) -> None:
        self.path = Path(path)
        self.retention = retention
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._db() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS ended_sessions (kind TEXT NOT NULL, "
                         "value TEXT NOT NULL, ended_at REAL NOT NULL, "
                         "PRIMARY KEY (kind, value))")
            conn.execute("CREATE TABLE IF NOT EXISTS seen_logout_tokens (jti TEXT PRIMARY KEY, "
                         "expires_at REAL NOT NULL)")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    def first_use(self, jti: str, keep_until: float) -> bool:
        """Record a logout token's jti; False when it was seen already (a replay)."""
        now = time.time()
        with self._db() as conn:
            conn.execute("DELETE FROM seen_logout_tokens WHERE expires_at < ?", (now,))
            inserted = conn.execute(
                "INSERT OR IGNORE INTO seen_logout_tokens (jti, expires_at) VALUES (?, ?)",
                (jti, keep_until)).rowcount
        return inserted == 1

    def end(self, *, sid: str | None = None, sub: str | None = None) -> None:
        """The IdP ended this session (sid), or every session of this user (sub) begun
        before now."""
        now = time.time()
        kind, value = ("sid", sid) if sid else ("sub", sub)
        if not value:
            raise ValueError("a sid or a sub is needed")
        with self._db() as conn:
            conn.execute("DELETE FROM ended_sessions WHERE ended_at < ?",
                         (now - self.retention,))
            conn.execute("INSERT INTO ended_sessions (kind, value, ended_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (kind, value) DO UPDATE SET ended_at = excluded.ended_at",
                         (kind, value, now))

    def is_ended(self, *, sid: str | None, sub: str | None, signed_in_at: float) -> bool:
        """Has the IdP ended this RP session: its sid, or its user's sessions after it
        began?"""
        with self._db() as conn:
            row = conn.execute(
                "SELECT 1 FROM ended_sessions WHERE (kind = 'sid' AND value = ?) OR "
                "(kind = 'sub' AND value = ? AND ended_at >= ?) LIMIT 1",
                (sid or "", sub or "", signed_in_at)).fetchone()
        return row is not None
