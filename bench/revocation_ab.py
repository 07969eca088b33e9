"""Before/after of the revocation cache (issue 26, idp/oidc/revocation_cache.py) in one run:
the same IdP, database and token, with `tokens.revocation_cache_ms` at the policy's value
(after) and at 0 (before: every introspection and userinfo reads the database), alternated
ROUNDS times so that a noisy machine hits both alike; besides requests/s, the server's CPU
time per request (/proc utime+stime over the requests wrk counted), which other load on a
shared machine moves far less than wall-clock throughput. One sync gunicorn worker pinned to
SERVER_CPU, wrk on GEN_CPU, as bench/run.py.

  .venv/bin/python bench/revocation_ab.py      (DURATION, CONNS, ROUNDS, DATABASE_URL)
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402 - bench/run.py, beside this file

ROUNDS = int(os.environ.get("ROUNDS", "2"))


def policy_without_cache(tmp: Path) -> str:
    source = Path(os.environ.get("IDP_POLICY_DIR", str(run.REPO / "idp" / "policies")))
    target = tmp / "policies-nocache"
    shutil.copytree(source, target)
    tokens = target / "tokens.toml"
    text, n = re.subn(r"(?m)^revocation_cache_ms\s*=\s*\d+", "revocation_cache_ms = 0",
                      tokens.read_text())
    if n != 1:
        run.fail("tokens.toml has no revocation_cache_ms line")
    tokens.write_text(text)
    return str(target)


def cpu_seconds(server: run.Process) -> float:
    """User+system CPU time of the server's processes so far: per request, far less moved by
    other load on the machine than requests/s."""
    total = 0.0
    for pid in [server.proc.pid, *server.children()]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> None:
    os.sched_setaffinity(0, {int(run.GEN_CPU)})
    tmp, url, schema, port, env = run.ab_instance("idp-bench-ab-")
    issuer = env["IDP_ISSUER"]
    env.pop("REDIS_URL", None)  # the epoch reading alone: the cheaper configuration's cost
    os.environ.update({k: v for k, v in env.items() if k.startswith("IDP_")
                       or k == "DATABASE_URL"})
    try:
        app = run.make_app(env)
        seeded = run.seed(app, 8)
        variants = {"after (cache)": env,
                    "before (no cache)": {**env, "IDP_POLICY_DIR": policy_without_cache(tmp)}}
        server, _ = run.start_idp(env, port, "sync", 1, tmp)
        try:
            user, seed_ = seeded.users[0]
            access = run.login_once(issuer, seeded, user, seed_, "127.0.0.2")["access_token"]
        finally:
            server.stop()
        basic = base64.b64encode(f"{seeded.web_id}:{seeded.web_secret}".encode()).decode()
        results: dict[str, list[tuple[float, float, float, float]]] = {
            name: [] for name in variants}
        for _ in range(ROUNDS):
            for name, variant in variants.items():
                server, _ = run.start_idp(variant, port, "sync", 1, tmp)
                try:
                    start = cpu_seconds(server)
                    intro = run.wrk(f"{issuer}/introspect", "post.lua",
                                    {"AUTH": f"Basic {basic}", "BODY": f"token={access}"})
                    middle = cpu_seconds(server)
                    info = run.wrk(f"{issuer}/userinfo", "get.lua",
                                   {"AUTH": f"Bearer {access}"})
                    end = cpu_seconds(server)
                finally:
                    server.stop()
                cpu_intro = 1000 * (middle - start) / max(1, intro.requests)
                cpu_info = 1000 * (end - middle) / max(1, info.requests)
                results[name].append((intro.rps, info.rps, cpu_intro, cpu_info))
                run.say(f"{name}: introspection {intro.rps:,.0f}/s {cpu_intro:.2f} CPU ms "
                        f"({intro.non200} non-200), userinfo {info.rps:,.0f}/s "
                        f"{cpu_info:.2f} CPU ms ({info.non200} non-200)")
        print(f"revocation cache A/B, {'PostgreSQL' if schema else 'SQLite'}, one sync "
              f"worker on core {run.SERVER_CPU}, wrk on core {run.GEN_CPU}, "
              f"DURATION={run.DURATION}s CONNS={run.CONNS}, {ROUNDS} alternated rounds")
        print("| variant | introspection req/s | CPU ms per introspection | userinfo req/s | "
              "CPU ms per userinfo |")
        print("| --- | --- | --- | --- | --- |")
        for name, rounds in results.items():
            cols = [" / ".join(f"{r[i]:,.{0 if i < 2 else 2}f}" for r in rounds)
                    for i in (0, 2, 1, 3)]
            print(f"| {name} | " + " | ".join(cols) + " |")
    finally:
        run.discard(tmp, schema)


if __name__ == "__main__":
    main()
