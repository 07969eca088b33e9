"""Lockout under concurrency across two IdP processes, and login timing that does not tell
known accounts from unknown ones. Both against real gunicorn nodes (production argon2)."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from argon2 import PasswordHasher, Type

from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.context import policy
from idp.extensions import db
from tests.e2e.conftest import Server
from tests.helpers import PASSWORD, csrf_from, login, make_user

pytestmark = pytest.mark.e2e


def _attempt(server: Server, username: str, password: str) -> tuple[int, str, float]:
    http = requests.Session()
    page = http.get(server.url("/login"), timeout=10)
    started = time.perf_counter()
    response = http.post(server.url("/login"), allow_redirects=False, timeout=30, data={
        "username": username, "password": password, "csrf_token": csrf_from(page.text)})
    return response.status_code, response.text, time.perf_counter() - started


def test_concurrent_failures_on_two_nodes_lock_exactly_once(ctx, two_nodes, mailbox, client,
                                                            frozen, redis_limits):
    user = make_user()
    user_id, email = user.id, user.email
    db.session.commit()
    limit = policy().lockout.max_failures
    jobs = [(two_nodes[i % 2], "drsmith", f"wrong-password-{i}") for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda job: _attempt(*job), jobs))
    assert all(status == 401 for status, _, _ in results), [r[0] for r in results]
    db.session.expire_all()
    locked = db.session.get(User, user_id)
    assert locked.failed_logins == limit, locked.failed_logins  # never past, never short
    assert locked.locked_until is not None
    failures = db.session.query(AuditEvent).filter_by(event="login.failure", user_id=user_id)
    assert failures.count() == 20
    assert len(mailbox.to(email)) == 1  # one lock, one email
    # The right password is refused on both nodes while locked ...
    redis_limits.flush()  # (past the per-account throttle, which would answer 429 instead)
    for server in two_nodes:
        assert _attempt(server, "drsmith", PASSWORD)[0] == 401
    # ... and accepted once the lock has run out (time moved, not slept)
    frozen.advance(policy().lockout.lock_duration + 1)
    assert login(client).status_code == 302


def test_login_time_does_not_reveal_whether_an_account_exists(ctx, two_nodes, redis_limits):
    node = two_nodes[0]
    from idp.context import settings
    from idp.policy import load_policy

    a = load_policy(settings().policy_dir).argon2  # what the nodes run, not the test's
    production = PasswordHasher(time_cost=a.time_cost, memory_cost=a.memory_cost,
                                parallelism=a.parallelism, hash_len=a.hash_len,
                                salt_len=a.salt_len, type=Type.ID).hash(PASSWORD)
    names = [f"known{i:02d}" for i in range(20)]
    for name in names:  # one wrong try each: no account gets near its lock
        user = make_user(name, npi=None)
        user.password_hash = production
    db.session.commit()
    _attempt(node, "warm-up", "x")
    known, unknown = [], []
    for i, name in enumerate(names):
        status_k, text_k, took_k = _attempt(node, name, "wrong-password-x")
        status_u, text_u, took_u = _attempt(node, f"ghost{i:02d}", "wrong-password-x")
        assert status_k == status_u == 401
        known.append(took_k)
        unknown.append(took_u)
    med_k, med_u = statistics.median(known), statistics.median(unknown)
    assert abs(med_k - med_u) / max(med_k, med_u) < 0.25, (med_k, med_u)
