"""Before/after of group commit (issue 26, idp/audit/group_commit.py) in one run: the same
IdP, database and client, client_credentials tokens under wrk, with IDP_GROUP_COMMIT=1
(after: the process's committer writes batches) and IDP_GROUP_COMMIT=0 (before: one
transaction and one fsync per token), alternated ROUNDS times so that a noisy machine hits
both alike. Besides tokens/s and latency, the server's CPU time per token (/proc
utime+stime) and, on PostgreSQL, the committed transactions per token (pg_stat_database
xact_commit of the bench's database over the run: other databases' load does not count).
One gunicorn worker (gthread, THREADS threads: group commit batches the requests of one
process) pinned to SERVER_CPU, wrk on GEN_CPU, as bench/run.py.

  .venv/bin/python bench/group_commit_ab.py   (DURATION, CONNS, ROUNDS, THREADS, DATABASE_URL)
"""

from __future__ import annotations

import base64
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402 - bench/run.py, beside this file
from revocation_ab import cpu_seconds  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "2"))
THREADS = int(os.environ.get("THREADS", "8"))


def commits() -> int | None:
    """Transactions committed in the bench's PostgreSQL database so far (None on SQLite)."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        return None
    import sqlalchemy as sa

    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    time.sleep(1.5)  # the statistics are flushed about once a second
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            return int(conn.execute(sa.text(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )).scalar_one())
    finally:
        engine.dispose()


def main() -> None:
    os.sched_setaffinity(0, {int(run.GEN_CPU)})
    tmp, url, schema, port, env = run.ab_instance("idp-bench-gc-")
    issuer = env["IDP_ISSUER"]
    os.environ.update({k: v for k, v in env.items() if k.startswith("IDP_")})
    try:
        app = run.make_app(env)
        seeded = run.seed(app, 1)
        basic = base64.b64encode(f"{seeded.cc_id}:{seeded.cc_secret}".encode()).decode()
        body = {"AUTH": f"Basic {basic}", "BODY": "grant_type=client_credentials"}
        variants = {"after (group commit)": {**env, "IDP_GROUP_COMMIT": "1"},
                    "before (a commit per token)": {**env, "IDP_GROUP_COMMIT": "0"}}
        results: dict[str, list[tuple[run.Result, float, float | None]]] = {
            name: [] for name in variants}
        for _ in range(ROUNDS):
            for name, variant in variants.items():
                server, _ = run.start_idp(variant, port, "gthread", THREADS, tmp)
                try:
                    run.wrk(f"{issuer}/token", "post.lua", body, duration=1)  # warm up
                    before_commits = commits()
                    start = cpu_seconds(server)
                    result = run.wrk(f"{issuer}/token", "post.lua", body)
                    cpu = 1000 * (cpu_seconds(server) - start) / max(1, result.requests)
                    after_commits = commits()
                finally:
                    server.stop()
                per_token = None if before_commits is None or after_commits is None else \
                    (after_commits - before_commits) / max(1, result.requests)
                results[name].append((result, cpu, per_token))
                run.say(f"{name}: {result.rps:,.0f} tokens/s, p50 {result.p50} ms, p99 "
                        f"{result.p99} ms, {cpu:.2f} CPU ms/token, "
                        f"commits/token {per_token}, {result.non200} non-200")
        print(f"group commit A/B, client_credentials (JWT {run.AT_ALG}), "
              f"{'PostgreSQL' if schema else 'SQLite'}, one gunicorn gthread worker x{THREADS} "
              f"on core {run.SERVER_CPU}, wrk on core {run.GEN_CPU}, DURATION={run.DURATION}s "
              f"CONNS={run.CONNS}, {ROUNDS} alternated rounds")
        print("| variant | tokens/s | p50 ms | p99 ms | server CPU ms per token | "
              "committed transactions per token | non-200 |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, rounds in results.items():
            cols = [" / ".join(f"{r.rps:,.0f}" for r, _, _ in rounds),
                    " / ".join(f"{r.p50}" for r, _, _ in rounds),
                    " / ".join(f"{r.p99}" for r, _, _ in rounds),
                    " / ".join(f"{c:.2f}" for _, c, _ in rounds),
                    " / ".join("n/a" if t is None else f"{t:.2f}" for _, _, t in rounds),
                    " / ".join(str(r.non200) for r, _, _ in rounds)]
            print(f"| {name} | " + " | ".join(cols) + " |")
    finally:
        run.discard(tmp, schema)


if __name__ == "__main__":
    main()
