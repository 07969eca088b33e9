"""SCIM provisioning figures (not a test): user creates/s and filtered lookups/s on one core.

The IdP runs under gunicorn (gthread, one worker, BENCH_THREADS threads) pinned to one core
(taskset -c SERVER_CPU, default 0), on a throwaway instance, key directory and SQLite file (or
a fresh schema of the PostgreSQL database when DATABASE_URL is set). The clients are Python
threads with keep-alive connections, on the other core (GEN_CPU, default 1). The policies are a
copy with the per-token rate limit lifted and the welcome mail off (no SMTP server here; the
mail leaves after the response anyway).

  creates   POST /Users: a user with name, work email, externalId and the enterprise
            extension, no password (a password costs one argon2id hash: see make bench)
  lookups   GET /Users?filter=userName eq "..." (what Entra ID and Okta send before each
            change), over the users just created

Environment: BENCH_SCIM_USERS (creates, default 2000), DURATION (seconds of lookups, default
5), CONNS (client threads, default 8), BENCH_THREADS (server threads, default 4),
DATABASE_URL, SERVER_CPU / GEN_CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_run", HERE / "run.py")
run = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["bench_run"] = run  # its dataclasses look their module up
_spec.loader.exec_module(run)  # type: ignore[union-attr]

USERS = int(os.environ.get("BENCH_SCIM_USERS", "2000"))
DURATION = int(os.environ.get("DURATION", "5"))
CONNS = int(os.environ.get("CONNS", "8"))
THREADS = int(os.environ.get("BENCH_THREADS", "4"))
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def policies(tmp: Path) -> str:
    target = tmp / "policies"
    shutil.copytree(run.REPO / "idp" / "policies", target)
    scim = target / "scim.toml"
    text = re.sub(r'(?m)^rate_limit = .*$', 'rate_limit = "100000000 per minute"',
                  scim.read_text())
    scim.write_text(re.sub(r"(?m)^welcome_mail = .*$", "welcome_mail = false", text))
    return str(target)


def user(i: int) -> dict:
    name = f"bench.user{i:06d}@hospital.example"
    return {"schemas": [CORE, ENT], "userName": name, "externalId": f"ext-{i}",
            "name": {"givenName": "Bench", "familyName": f"User{i}"}, "active": True,
            "emails": [{"type": "work", "value": name, "primary": True}],
            ENT: {"employeeNumber": f"E{i}", "department": "Cardiology"}}


def in_threads(work, items: list) -> tuple[float, int]:  # noqa: ANN001
    """Run work(session, item) over items with CONNS threads; (seconds, failures)."""
    queue = list(items)
    lock = threading.Lock()
    failures = [0]

    def worker() -> None:
        with requests.Session() as http:
            while True:
                with lock:
                    if not queue:
                        return
                    item = queue.pop()
                if not work(http, item):
                    with lock:
                        failures[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(CONNS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, failures[0]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="idp-bench-scim-"))
    database, schema = run.database_url(tmp)
    port = run.free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "IDP_ISSUER": base, "DATABASE_URL": database,
           "IDP_KEYS_DIR": str(tmp / "keys"), "IDP_INSTANCE_DIR": str(tmp / "instance"),
           "IDP_POLICY_DIR": policies(tmp), "IDP_SECRET_KEY": os.urandom(24).hex(),
           "IDP_OUTBOUND_ALLOW": "127.0.0.0/8"}
    env.pop("REDIS_URL", None)
    from flask_migrate import upgrade

    from idp import create_app, enable_migrations
    from idp.config import Settings
    from idp.extensions import db
    from idp.scim import tokens

    app = create_app(Settings.from_env(env))
    with app.app_context():
        enable_migrations(app)
        upgrade(revision="heads")
        token = tokens.create("bench", None, actor="bench").token
        db.session.commit()
        db.engine.dispose()
    argv = ["taskset", "-c", run.SERVER_CPU, sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread",
            "--threads", str(THREADS), "--no-control-socket", "idp.wsgi:app"]
    server = run.Process(argv, env, run.REPO, tmp / "gunicorn.log")
    try:
        run.wait_http(f"{base}/readyz", server.proc)
        os.sched_setaffinity(0, {int(run.GEN_CPU)})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}

        def create(http: requests.Session, i: int) -> bool:
            return http.post(f"{base}/scim/v2/Users", data=json.dumps(user(i)),
                             headers=headers, timeout=30).status_code == 201

        seconds, failed = in_threads(create, list(range(USERS)))
        creates = USERS / seconds
        run.say(f"{USERS} creates in {seconds:.1f} s ({failed} failed)")

        def lookup(http: requests.Session, _: int) -> bool:
            i = random.randrange(USERS)
            response = http.get(f"{base}/scim/v2/Users", headers=headers, timeout=30,
                                params={"filter": f'userName eq "bench.user{i:06d}'
                                                  '@hospital.example"'})
            return response.status_code == 200 and response.json()["totalResults"] == 1

        # Lookups for DURATION seconds: as many as fit, in batches.
        done = lookups_failed = 0
        started = time.perf_counter()
        while time.perf_counter() - started < DURATION:
            _, failed_batch = in_threads(lookup, list(range(500)))
            done += 500
            lookups_failed += failed_batch
        lookups = done / (time.perf_counter() - started)
        db_kind = "PostgreSQL" if schema else "SQLite"
        print(f"SCIM on one core ({db_kind}, gunicorn gthread 1 worker x {THREADS} threads, "
              f"{CONNS} clients):")
        print(f"  user creates/s      {creates:8.1f}   ({USERS} users, {failed} failed)")
        print(f"  filtered lookups/s  {lookups:8.1f}   ({done} lookups, {lookups_failed} "
              "failed)")
    finally:
        server.stop()
        run.discard(tmp, schema)


if __name__ == "__main__":
    main()
