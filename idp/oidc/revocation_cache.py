"""Introspection and userinfo without a database read in the common case.

A node-local cache of access-token records (the revocation check: the row of
tokens.verify_access_token(with_user=False)) and of the userinfo claims of an account, both
trusted only while the revocation epoch has not moved:

- every revocation (tokens.revoke_where, tokens.revoke_access_token) adds one to the epoch row
  (oauth_revocation_epoch) in the revoking transaction: the epoch moves exactly when the
  revocation becomes visible to other transactions;
- a process trusts its last reading of the epoch for at most `tokens.revocation_cache_ms`
  (policy, 1000 ms) and reads it again after that: one primary-key SELECT per process per
  interval, not per request; a different epoch empties the cache;
- the process that committed a revocation empties its own cache at once; with REDIS_URL it
  also publishes on a channel, and every process's subscriber thread makes its next lookup read
  the epoch again (milliseconds). A lost message changes nothing to the bound below.
- an entry is stored under the epoch read *before* its row was read, and kept only if that
  epoch is still current when it is stored: a record read before a revocation committed can
  never be served after the epoch reading that shows the revocation.

Bound: a token revoked on any node is refused by every node at most `revocation_cache_ms`
after the revoking transaction committed (plus the duration of a request already in flight).

Cold cache, unknown jti, or the cache off (revocation_cache_ms = 0): the database, as before.
Userinfo claims are also cached at most CLAIMS_TTL seconds (a changed name, e-mail or
feature claim such as fhirUser shows within that time, like a client registration in
idp.oidc.client_cache), and emptied in this process by any ORM change of an account. A
disabled account is safe sooner: disabling it revokes its tokens, which moves the epoch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, insert, select, update
from sqlalchemy.orm import Session, UOWTransaction

from idp.accounts.models import User
from idp.context import policy, settings
from idp.extensions import db
from idp.oidc.models import RevocationEpoch

log = logging.getLogger(__name__)

CLAIMS_TTL = 5.0
MAX_ENTRIES = 100_000
CHANNEL = "idp:revocation-epoch"

_lock = threading.Lock()
_epoch: int | None = None          # the last epoch read (None: not read yet)
_checked = float("-inf")           # when that reading started (monotonic)
_records: dict[str, tuple[int, Any]] = {}
_claims: dict[tuple[int, str], tuple[int, float, bool, dict[str, Any]]] = {}
_clock = time.monotonic             # tests move it
_subscriber_pid: int | None = None
stats = {"record_hits": 0, "record_misses": 0, "epoch_reads": 0}

_TABLE = RevocationEpoch.__table__
_READ = select(_TABLE.c.epoch).where(_TABLE.c.id == 1)
_BUMP = update(_TABLE).where(_TABLE.c.id == 1).values(epoch=_TABLE.c.epoch + 1)
_FIRST = insert(_TABLE).values(id=1, epoch=1)


def _bound() -> float:
    return policy().tokens.revocation_cache_ms / 1000


def clear() -> None:
    """Forget every entry and the epoch reading (the next lookup reads the epoch)."""
    global _checked
    with _lock:
        _records.clear()
        _claims.clear()
        _checked = float("-inf")


def current_epoch() -> int | None:
    """The revocation epoch as this process may trust it now; None when the cache is off."""
    global _epoch, _checked
    bound = _bound()
    if bound <= 0:
        return None
    _ensure_subscriber()
    started = _clock()
    if _epoch is not None and started - _checked < bound:
        return _epoch
    value = db.session.connection().execute(_READ).scalar() or 0
    stats["epoch_reads"] += 1
    with _lock:
        if value != _epoch:
            _records.clear()
            _claims.clear()
            _epoch = value
        _checked = started  # when the reading started: the bound runs from there
    return value


def record(jti: str, load: Callable[[], Any]) -> Any:
    """The access-token record row of `jti` (None: no such record), from the cache when the
    epoch allows, else from `load` (one database statement), then cached."""
    epoch = current_epoch()
    if epoch is None:
        return load()
    entry = _records.get(jti)
    if entry is not None and entry[0] == epoch:
        stats["record_hits"] += 1
        return entry[1]
    stats["record_misses"] += 1
    row = load()
    if row is not None:
        with _lock:
            if epoch == _epoch:  # no revocation seen while it was read
                if len(_records) >= MAX_ENTRIES:
                    _records.clear()
                _records[jti] = (epoch, row)
    return row


def user_info(user_id: int, scope: str, build: Callable[[User], dict[str, Any]],
              subject: str | None = None) -> tuple[bool, dict[str, Any] | None]:
    """(active, claims) of the account for a userinfo answer: from the cache when the epoch
    and CLAIMS_TTL allow, else read and built by `build(user)`. (False, None): no such
    account, disabled, or not the account `subject` (the token's `sub`) names: an account id
    can come again (SQLite reuses the highest id after a delete), a subject never does."""
    epoch = current_epoch()
    key = (user_id, scope)
    now = _clock()
    if epoch is not None:
        entry = _claims.get(key)
        if entry is not None and entry[0] == epoch and entry[1] > now and (
                subject is None or (entry[3] or {}).get("sub") == subject):
            return entry[2], dict(entry[3]) if entry[3] is not None else None
    user = db.session.get(User, user_id)
    if user is None or user.disabled or (subject is not None and user.subject != subject):
        active, claims = False, None
    else:
        active, claims = True, build(user)
    if epoch is not None and claims is not None:
        with _lock:
            if epoch == _epoch:
                if len(_claims) >= MAX_ENTRIES:
                    _claims.clear()
                _claims[key] = (epoch, now + CLAIMS_TTL, active, dict(claims))
    return active, claims


# -- the revoking side -------------------------------------------------------------------------
_FLAG = "idp_revocation_epoch_moved"


def bump() -> None:
    """In the revoking transaction: the epoch moves when it commits; after the commit this
    process forgets its entries and, with Redis, every other process is told."""
    session = db.session()
    moved = session.connection().execute(_BUMP).rowcount
    if not moved:  # the row is missing (emptied tables): it starts again
        session.connection().execute(_FIRST)
    session.info[_FLAG] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_FLAG, False):
        clear()
        _publish()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_FLAG, None)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: UOWTransaction, _instances: Any) -> None:
    # an account deleted outright takes its token records with it (ON DELETE CASCADE): that
    # is a revocation too
    if any(isinstance(obj, User) for obj in session.deleted):
        bump()


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: UOWTransaction) -> None:
    if any(isinstance(obj, User) for obj in (*session.dirty, *session.deleted)):
        with _lock:
            _claims.clear()


# -- Redis: the revocation reaches other processes at once -----------------------------------
def _redis_url() -> str | None:
    try:
        return settings().redis_url
    except RuntimeError:  # outside an application context
        return None


def _publish() -> None:
    url = _redis_url()
    if not url:
        return
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        client.publish(CHANNEL, b"1")
        client.close()
    except Exception as exc:  # noqa: BLE001 - the epoch reading still bounds the delay
        log.warning("revocation epoch not published: %s", type(exc).__name__)


def _ensure_subscriber() -> None:
    """One subscriber thread per process (started after a fork, on first use)."""
    global _subscriber_pid
    if _subscriber_pid == os.getpid():
        return
    url = _redis_url()
    with _lock:
        if _subscriber_pid == os.getpid():
            return
        _subscriber_pid = os.getpid()
    if url:
        threading.Thread(target=_listen, args=(url,), name="revocation-epoch",
                         daemon=True).start()


def _listen(url: str) -> None:
    import redis

    while True:
        try:
            pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL)
            clear()  # anything published while it was not subscribed
            for message in pubsub.listen():
                if message.get("type") == "message":
                    clear()
        except Exception as exc:  # noqa: BLE001 - retried; the epoch reading is the bound
            log.warning("revocation epoch subscriber: %s", type(exc).__name__)
        time.sleep(1.0)

