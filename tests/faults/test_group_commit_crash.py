"""Group commit (idp/audit/group_commit.py) under kill -9: no acknowledged token is lost and the
audit chain stays intact.

A gunicorn node (1 worker × 8 threads, group commit on) serves client_credentials tokens to 8
concurrent clients. Once tokens are flowing, the test takes the database lock a batch needs
(PostgreSQL: the audit head row, FOR UPDATE; SQLite: the write lock, BEGIN IMMEDIATE), so the
batch under way waits *inside its transaction* with the requests of its stages waiting for it;
then the whole node (master and worker) gets SIGKILL and the lock is released. A new node on
the same database then shows that every token whose response a client received is recorded
and introspects active, and `idp audit verify` finds the chain intact.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import text

from idp.audit.models import AuditEvent
from idp.config import PROJECT_ROOT
from idp.extensions import db
from idp.oidc.models import AccessTokenRecord
from tests.e2e.conftest import Server, free_port
from tests.helpers import Rp, basic, make_client, wait_ready

CLIENTS = 8
ACKNOWLEDGED_BEFORE_THE_LOCK = 60
IDP = str(Path(sys.executable).parent / "idp")


@contextmanager
def node(env: dict[str, str], log_dir: Path, issuer: str | None = None
         ) -> Iterator[tuple[Server, subprocess.Popen]]:
    """A gunicorn node in a process group of its own (so kill -9 reaches the worker too);
    `issuer`: the first node's, for the node restarted on another port."""
    port = free_port()
    server = Server(f"http://127.0.0.1:{port}", log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **env, "IDP_ISSUER": issuer or server.base,
                 "IDP_GROUP_COMMIT": "1"}
    child_env.pop("IDP_PROXY_HOPS", None)
    with open(log_dir / "gunicorn.stdout", "wb") as out, \
            open(log_dir / "gunicorn.stderr", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
             "--no-control-socket", "--workers", "1", "--threads", str(CLIENTS),
             "--worker-class", "gthread", "--timeout", "60", "idp.wsgi:app"],
            cwd=PROJECT_ROOT, env=child_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        wait_ready(proc, lambda: requests.get(server.url("/readyz"), timeout=2), server.stderr,
                   "gunicorn", 30.0)
        yield server, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)


class Load:
    """CLIENTS threads asking for tokens until the node dies; what each received."""

    def __init__(self, server: Server, rp: Rp) -> None:
        self.server, self.rp = server, rp
        self.acknowledged: list[str] = []
        self.cut_off = 0  # requests sent that never got an answer (the node died)
        self.refused: list[int] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True)
                        for _ in range(CLIENTS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=60)

    def _client(self) -> None:
        http = requests.Session()
        while True:
            try:
                answer = http.post(self.server.url("/token"), headers=basic(self.rp), timeout=50,
                                   data={"grant_type": "client_credentials",
                                         "scope": "system/Patient.rs"})
            except requests.RequestException:
                with self.lock:
                    self.cut_off += 1
                return
            with self.lock:
                if answer.status_code == 200:
                    self.acknowledged.append(answer.json()["access_token"])
                else:
                    self.refused.append(answer.status_code)

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)


@contextmanager
def batch_blocked(database: str) -> Iterator[None]:
    """Hold what the next batch's transaction needs, so it waits inside that transaction."""
    if database.startswith("sqlite"):
        conn = sqlite3.connect(database.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with db.engine.connect() as conn:
        # every writer's chain head: UPDATE and INSERT wait, reads go on
        conn.execute(text("LOCK TABLE audit_head IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]


def test_kill_9_mid_batch_loses_no_acknowledged_token_and_the_chain_verifies(
        ctx, env: dict[str, str], workdir: Path):
    rp = make_client(name="Lab feed", grant_types=["client_credentials"],
                     redirect_uri="https://lab.example/cb", scope="system/Patient.rs")
    with node(env, workdir / "group-commit-a") as (server, proc):
        load = Load(server, rp)
        load.start()
        deadline = time.monotonic() + 120
        while load.count() < ACKNOWLEDGED_BEFORE_THE_LOCK and time.monotonic() < deadline \
                and not load.refused:
            time.sleep(0.05)
        assert load.count() >= ACKNOWLEDGED_BEFORE_THE_LOCK, (load.refused, server.stderr())
        with batch_blocked(env["DATABASE_URL"]):
            time.sleep(1.0)  # the clients' next requests reach the committer and wait
            os.killpg(proc.pid, signal.SIGKILL)  # master and worker, mid-batch
            proc.wait(timeout=15)
        load.join()
    acknowledged = list(load.acknowledged)
    assert not load.refused, load.refused
    # the kill caught requests waiting for their batch: each was sent and never answered
    assert load.cut_off >= 1
    db.session.rollback()
    jtis = [_jti(token) for token in acknowledged]
    found = {jti for (jti,) in db.session.query(AccessTokenRecord.jti)
             .filter(AccessTokenRecord.jti.in_(jtis))}
    assert found == set(jtis), f"{len(set(jtis) - found)} acknowledged tokens lost"
    # every issued token has its audit event (those of batches that committed; none other)
    records = db.session.query(AccessTokenRecord).count()
    issued = db.session.query(AuditEvent).filter(AuditEvent.event == "token.issued").count()
    assert records == issued >= len(jtis)

    with node(env, workdir / "group-commit-b", issuer=server.base) as (restarted, _):
        http = requests.Session()
        for token in acknowledged:
            answer: Any = http.post(restarted.url("/introspect"), headers=basic(rp),
                                    data={"token": token}, timeout=30).json()
            assert answer["active"] is True and answer["client_id"] == rp.client_id
        # the restarted node issues on the same chain
        assert http.post(restarted.url("/token"), headers=basic(rp), timeout=30, data={
            "grant_type": "client_credentials", "scope": "system/Patient.rs"}).status_code == 200
    verified = subprocess.run([IDP, "audit", "verify", "--json"], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["intact"] is True and report["events"] >= len(jtis) + 1, report
