"""Before/after of one audit chain per writer (issue 26, idp/audit/chains.py) in one run.

WRITERS processes (default 2: two IdP processes or nodes) append audit events for DURATION
seconds, one event per transaction as a token issuance or a sign-in step records one, on one
database (PostgreSQL with DATABASE_URL, else SQLite):

  before  every process appends to ONE shared chain through the head's row lock (the design
          before issue 26: UPDATE head RETURNING, UPDATE its hash, INSERT, COMMIT, while the
          other processes wait for the row)
  after   each process appends to its own chain (the conditional claim and the INSERT)

alternated ROUNDS times so that a noisy machine hits both alike. Prints committed events/s,
transaction latency (p50, p99) and whether `verify` finds the history intact afterwards.
The server processes of `make bench` spend most of a token on other work; this isolates what
the audit head costs a cluster's writers.

  DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
      .venv/bin/python bench/audit_chains_ab.py          (WRITERS, DURATION, ROUNDS)
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402 - bench/run.py, beside this file

WRITERS = int(os.environ.get("WRITERS", "2"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))


def _writer(url: str, mode: str, start: float, duration: float,
            out: multiprocessing.Queue) -> None:
    import sqlalchemy as sa

    from idp import clock
    from idp.audit import chains

    engine = sa.create_engine(url, pool_size=1)
    key = (os.getpid(), id(engine))
    row = {"event": "bench.event", "user_id": None, "client_id": "bench", "ip": "192.0.2.1",
           "actor": "client:bench", "user_agent": None, "detail": {"mode": mode}}
    latencies: list[float] = []
    while time.time() < start:
        time.sleep(0.001)
    end = start + duration
    while time.time() < end:
        began = time.perf_counter()
        with engine.begin() as conn:
            rows = [{**row, "at": clock.now()}]
            if mode == "before":   # the shared head, as every append did before
                shared = chains._Writer(chain=1, head=(0, ""), anchored_at=time.monotonic())
                chains._append_slow(conn, key, shared, rows, clock.now())
            else:
                chains.append(conn, rows)
        latencies.append((time.perf_counter() - began) * 1000)
    engine.dispose()
    out.put(latencies)


def _round(url: str, mode: str) -> tuple[float, float | None, float | None]:
    spawn = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = spawn.Queue()
    start = time.time() + 3.0   # every writer started and connected by then
    procs = [spawn.Process(target=_writer, args=(url, mode, start, run.DURATION, out))
             for _ in range(WRITERS)]
    for proc in procs:
        proc.start()
    found: list[float] = []
    for _ in procs:
        found += out.get(timeout=run.DURATION + 120)
    for proc in procs:
        proc.join(30)
    return (len(found) / run.DURATION, run.percentile(found, 50),
            run.percentile(found, 99))


def main() -> None:
    tmp, url, schema, _port, env = run.ab_instance("idp-bench-chains-")
    os.environ.update({k: v for k, v in env.items() if k.startswith("IDP_")})
    try:
        app = run.make_app(env)
        from flask_migrate import upgrade

        from idp import enable_migrations
        from idp.audit import service as audit
        from idp.extensions import db

        with app.app_context():
            enable_migrations(app)
            upgrade()
            audit.record("bench.started", actor="bench")   # chain 1: the shared one
            db.session.commit()
        results: dict[str, list[tuple[float, float | None, float | None]]] = {
            "before (one shared chain head)": [], "after (a chain per writer)": []}
        for _ in range(ROUNDS):
            for name in results:
                mode = "before" if name.startswith("before") else "after"
                found = _round(url, mode)
                results[name].append(found)
                run.say(f"{name}: {found[0]:,.0f} events/s, p50 {run.fmt(found[1], 2)} ms, "
                        f"p99 {run.fmt(found[2], 2)} ms")
        with app.app_context():
            verdict = audit.verdict()
        print(f"audit chains A/B, {'PostgreSQL' if schema else 'SQLite'}, {WRITERS} writer "
              f"processes, one event per transaction, DURATION={run.DURATION}s, {ROUNDS} "
              f"alternated rounds, {os.cpu_count()} cores ({run._cpu_model()})")
        print("| variant | committed events/s | p50 ms | p99 ms |")
        print("| --- | --- | --- | --- |")
        for name, rounds in results.items():
            print(f"| {name} | " + " | ".join(" / ".join(cols) for cols in (
                [f"{r[0]:,.0f}" for r in rounds], [run.fmt(r[1], 2) for r in rounds],
                [run.fmt(r[2], 2) for r in rounds])) + " |")
        print(f"afterwards: `verify` {'intact' if verdict.intact else 'BROKEN'}, "
              f"{verdict.events:,} events in {verdict.chains} chains"
              + ("" if verdict.intact else f" ({verdict.problem})"))
    finally:
        run.discard(tmp, schema)


if __name__ == "__main__":
    main()
