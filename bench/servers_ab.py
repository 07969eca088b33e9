"""Which server `idp serve` should run by default (issue 26, second round), by measurement, in
one run: every candidate server configuration, each started exactly as `idp serve` starts it
(`idp serve --server ... --workers W --threads T`, JSON request log, gunicorn's hooks and
logger), in two deployment shapes, alternated round by round (ROUNDS) so that the other load
of a shared machine hits every candidate alike.

  candidates  granian ASGI on idp.asgi with 1, 2, 4 and 8 threads per worker (the
              body-reading bridge, idp.web.asgi_bridge); gunicorn gthread x4; gunicorn sync
  shapes      1 worker pinned to core SERVER_CPU (taskset), load on GEN_CPU;
              2 workers on both cores (the load generator shares the second one)

For each: client_credentials tokens/s and p99 (wrk, bench/post.lua), introspection and
discovery req/s (bench/post.lua, bench/get.lua), and the server's CPU time per request
(utime+stime of its processes, /proc/<pid>/stat, over the requests wrk counted: other load
on the machine moves it far less than req/s). Then robustness: SLOW (50) clients hold
connections open, first sending their headers a byte a second (slow headers), then announcing
a 60 kB form body and sending it a byte a second (slow bodies); a client the server drops
reconnects and starts again, as an attacker would. Meanwhile PROBES ordinary client_credentials
requests, one after the other, each on a new connection, within PROBE_TIMEOUT seconds each:
how many were answered 200 and their median and max time.

The winner of a shape, by this rule: robust first (a candidate with any probe unanswered, not
200 or slower than ROBUST_BOUND seconds, in any round, loses to every robust one); then
tokens/s (mean over rounds; within TIE (5 %) of the best counts as equal); then token p99
(mean over rounds, lower wins).

  .venv/bin/python bench/servers_ab.py   (DURATION, CONNS, ROUNDS, SLOW, PROBES,
                                          PROBE_TIMEOUT, ROBUST_BOUND, CANDIDATES, SHAPES,
                                          DATABASE_URL)

CANDIDATES: comma-separated names among those below (default all); SHAPES: "1", "2" or "1,2".
"""

from __future__ import annotations

import base64
import os
import select
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402 - bench/run.py, beside this file
from revocation_ab import cpu_seconds  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "2"))
SLOW = int(os.environ.get("SLOW", "50"))
PROBES = int(os.environ.get("PROBES", "5"))
PROBE_TIMEOUT = float(os.environ.get("PROBE_TIMEOUT", "3"))
ROBUST_BOUND = float(os.environ.get("ROBUST_BOUND", "2"))
TIE = 0.05
ANNOUNCED = 60_000  # under web.toml's 64 kB: the server waits for the body

# name -> `idp serve` options
CANDIDATES = {
    "granian asgi x1": ["--server", "granian", "--threads", "1"],
    "granian asgi x2": ["--server", "granian", "--threads", "2"],
    "granian asgi x4": ["--server", "granian", "--threads", "4"],
    "granian asgi x8": ["--server", "granian", "--threads", "8"],
    "gunicorn gthread x4": ["--server", "gunicorn", "--worker-class", "gthread",
                            "--threads", "4"],
    "gunicorn sync": ["--server", "gunicorn", "--worker-class", "sync"],
}
SHAPES = {1: run.SERVER_CPU, 2: f"{run.SERVER_CPU},{run.GEN_CPU}"}  # workers -> cores


@dataclass
class Probe:
    answered: int = 0
    times: list[float] = field(default_factory=list)  # seconds; inf when unanswered

    @property
    def robust(self) -> bool:
        return self.answered == len(self.times) and max(self.times) <= ROBUST_BOUND

    def cell(self) -> str:
        done = [t for t in self.times if t != float("inf")]
        if not done:
            return f"0/{len(self.times)}"
        median = statistics.median(self.times)
        return (f"{self.answered}/{len(self.times)} "
                f"{'∞' if median == float('inf') else f'{1000 * median:,.0f}'}"
                f"/{'∞' if len(done) < len(self.times) else f'{1000 * max(done):,.0f}'}")


@dataclass
class Figures:
    token: run.Result
    token_cpu: float
    introspect: run.Result
    introspect_cpu: float
    discovery: run.Result
    discovery_cpu: float
    slow_headers: Probe
    slow_bodies: Probe


def start(env: dict[str, str], port: int, tmp: Path, options: list[str], workers: int,
          cpus: str) -> run.Process:
    """`idp serve` with these options, pinned to `cpus`, as an operator would run it (the
    worktree's code first on the path)."""
    argv = ["taskset", "-c", cpus, run.PYTHON, "-m", "idp.cli", "serve", *options,
            "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
            "--graceful-timeout", "5"]
    path = os.pathsep.join(p for p in (str(run.REPO), env.get("PYTHONPATH")) if p)
    proc = run.Process(argv, {**env, "PYTHONPATH": path}, run.REPO,
                       tmp / f"serve-{'-'.join(options[1:2])}-{workers}-{port}.log")
    run.wait_http(f"http://127.0.0.1:{port}/.well-known/openid-configuration", proc.proc)
    return proc


def measured(server: run.Process, url: str, script: str, env: dict[str, str]) -> tuple[
        run.Result, float]:
    """wrk on one endpoint, and the server's CPU ms per request it counted."""
    before = cpu_seconds(server)
    result = run.wrk(url, script, env)
    return result, 1000 * (cpu_seconds(server) - before) / max(1, result.requests)


class SlowClients:
    """`count` connections trickling their request a byte a second (headers, or a body after
    complete headers); one the server closes or answers is opened again at once."""

    def __init__(self, port: int, count: int, kind: str) -> None:
        self.port, self.count, self.kind = port, count, kind
        self.socks: list[socket.socket | None] = [None] * count
        self.stop = threading.Event()
        self.reconnects = 0
        self.thread = threading.Thread(target=self._drip, daemon=True)

    def _prefix(self) -> bytes:
        if self.kind == "headers":  # the request line and Host, then a header never ending
            return b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        return (b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n\r\ngrant_type=" % ANNOUNCED)

    def _open(self, i: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            sock.sendall(self._prefix())
            sock.setblocking(False)
            self.socks[i] = sock
        except OSError:
            self.socks[i] = None

    def _drop(self, i: int) -> None:
        sock = self.socks[i]
        if sock is not None:
            sock.close()
        self.socks[i] = None
        self.reconnects += 1

    def __enter__(self) -> SlowClients:
        for i in range(self.count):
            self._open(i)
        self.thread.start()
        time.sleep(1.5)  # every connection accepted and its first bytes read
        return self

    def _drip(self) -> None:
        while not self.stop.wait(1.0):
            open_ = [s for s in self.socks if s is not None]
            readable = set(select.select(open_, [], [], 0)[0]) if open_ else set()
            for i, sock in enumerate(self.socks):
                if sock is None or sock in readable:  # answered (408) or closed: again
                    if sock is not None:
                        self._drop(i)
                    self._open(i)
                    continue
                try:
                    sock.send(b"a")
                except OSError:
                    self._drop(i)
                    self._open(i)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.socks:
            if sock is not None:
                sock.close()


def probe(server_port: int, token_url: str, basic: tuple[str, str], kind: str) -> Probe:
    import requests

    result = Probe()
    with SlowClients(server_port, SLOW, kind):
        for _ in range(PROBES):
            began = time.monotonic()
            try:
                response = requests.post(token_url, data={"grant_type": "client_credentials"},
                                         auth=basic, timeout=PROBE_TIMEOUT,
                                         headers={"Connection": "close"})
                ok = response.status_code == 200
            except requests.RequestException:
                ok = False
            took = time.monotonic() - began
            result.times.append(took if ok else float("inf"))
            result.answered += ok
            time.sleep(0.2)
    return result


def one(env: dict[str, str], port: int, tmp: Path, options: list[str], workers: int,
        cpus: str, seeded: run.Seeded, access_token: str) -> Figures:
    issuer = env["IDP_ISSUER"]
    basic = base64.b64encode(f"{seeded.cc_id}:{seeded.cc_secret}".encode()).decode()
    auth = f"Basic {basic}"
    server = start(env, port, tmp, options, workers, cpus)
    try:
        token_body = {"AUTH": auth, "BODY": "grant_type=client_credentials"}
        run.wrk(f"{issuer}/token", "post.lua", token_body, duration=1)  # warm up
        token, token_cpu = measured(server, f"{issuer}/token", "post.lua", token_body)
        intro, intro_cpu = measured(server, f"{issuer}/introspect", "post.lua",
                                    {"AUTH": auth, "BODY": f"token={access_token}"})
        disc, disc_cpu = measured(server, f"{issuer}/.well-known/openid-configuration",
                                  "get.lua", {})
        pair = (seeded.cc_id, seeded.cc_secret)
        headers = probe(port, f"{issuer}/token", pair, "headers")
        bodies = probe(port, f"{issuer}/token", pair, "bodies")
    finally:
        server.stop()
    return Figures(token, token_cpu, intro, intro_cpu, disc, disc_cpu, headers, bodies)


def winner(rows: dict[str, list[Figures]]) -> tuple[str, str]:
    """(name, why) by the rule of the module docstring."""
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    robust = {n: all(f.slow_headers.robust and f.slow_bodies.robust for f in fs)
              for n, fs in rows.items()}
    pool = [n for n in rows if robust[n]] or list(rows)
    rps = {n: mean([f.token.rps for f in rows[n]]) for n in pool}
    best = max(rps.values())
    near = [n for n in pool if rps[n] >= (1 - TIE) * best]
    p99 = {n: mean([f.token.p99 or float("inf") for f in rows[n]]) for n in near}
    name = min(near, key=lambda n: p99[n])
    lost = [n for n in rows if not robust[n]]
    why = (f"robust: {', '.join(pool) if robust[name] else 'none'}"
           + (f" (starved or slow under slow clients: {', '.join(lost)})" if lost else "")
           + f"; tokens/s within {TIE:.0%} of the best ({best:,.0f}): "
           + ", ".join(f"{n} {rps[n]:,.0f}" for n in near)
           + "; p99 among those: " + ", ".join(f"{n} {p99[n]:.0f} ms" for n in near))
    return name, why


def main() -> None:
    os.sched_setaffinity(0, {int(run.GEN_CPU)})
    chosen = [c.strip() for c in os.environ.get("CANDIDATES", ",".join(CANDIDATES)).split(",")]
    shapes = [int(s) for s in os.environ.get("SHAPES", "1,2").split(",")]
    unknown = [c for c in chosen if c not in CANDIDATES] + [s for s in shapes if s not in SHAPES]
    if unknown:
        run.fail(f"unknown candidates or shapes: {unknown}")
    tmp, url, schema, port, env = run.ab_instance("idp-bench-servers-")
    issuer = env["IDP_ISSUER"]
    env.pop("IDP_LOG_FORMAT", None)  # `idp serve`'s default (JSON lines)
    env.pop("IDP_SERVER", None)
    env.pop("IDP_THREADS", None)
    env.pop("IDP_WORKERS", None)
    os.environ.update({k: v for k, v in env.items() if k.startswith("IDP_")
                       or k == "DATABASE_URL"})
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        app = run.make_app(env)
        seeded = run.seed(app, 1)
        import requests

        access_token = ""
        server = start(env, port, tmp, CANDIDATES["gunicorn sync"], 1, SHAPES[1])
        try:  # one token for the introspection load, issued once
            access_token = requests.post(
                f"{issuer}/token", data={"grant_type": "client_credentials"},
                auth=(seeded.cc_id, seeded.cc_secret), timeout=10).json()["access_token"]
        finally:
            server.stop()
        results: dict[int, dict[str, list[Figures]]] = {
            w: {c: [] for c in chosen} for w in shapes}
        for round_ in range(ROUNDS):
            for workers in shapes:
                for name in chosen:
                    figures = one(env, port, tmp, CANDIDATES[name], workers, SHAPES[workers],
                                  seeded, access_token)
                    results[workers][name].append(figures)
                    run.say(f"round {round_ + 1}, {workers} worker(s), {name}: token "
                            f"{figures.token.rps:,.0f}/s p99 {figures.token.p99} ms "
                            f"{figures.token_cpu:.2f} CPU ms; introspect "
                            f"{figures.introspect.rps:,.0f}/s; discovery "
                            f"{figures.discovery.rps:,.0f}/s; slow headers "
                            f"{figures.slow_headers.cell()}; slow bodies "
                            f"{figures.slow_bodies.cell()}")
        print()
        print(f"Servers A/B, {started}, {os.cpu_count()} cores ({run._cpu_model()}), "
              f"{'PostgreSQL' if schema else 'SQLite'}, client_credentials JWT {run.AT_ALG}, "
              f"DURATION={run.DURATION}s CONNS={run.CONNS}, {ROUNDS} alternated rounds "
              f"(cells: round 1 / round 2 ...), SLOW={SLOW} slow clients, PROBES={PROBES} "
              f"probes of {PROBE_TIMEOUT:g} s, robust when every probe answers 200 within "
              f"{ROBUST_BOUND:g} s; wrk on core {run.GEN_CPU}")
        print("shape 1: `idp serve --workers 1` pinned to core "
              f"{SHAPES[1]}; shape 2: `--workers 2` on cores {SHAPES[2]} (shared with wrk)")
        print()
        print("| candidate | shape | tokens/s | token p99 ms | CPU ms/token | introspection/s"
              " | CPU ms/introspection | discovery/s | CPU ms/discovery | slow headers: "
              "answered, median/max ms | slow bodies: answered, median/max ms | non-200 |")
        print("|" + " --- |" * 12)

        def cells(values: list[str]) -> str:
            return " / ".join(values)

        for workers in shapes:
            for name, rounds in results[workers].items():
                print(f"| {name} | {workers} worker{'s' if workers > 1 else ''} | "
                      + " | ".join([
                          cells([f"{f.token.rps:,.0f}" for f in rounds]),
                          cells([f"{f.token.p99:,.0f}" if f.token.p99 is not None else "n/a"
                                 for f in rounds]),
                          cells([f"{f.token_cpu:.2f}" for f in rounds]),
                          cells([f"{f.introspect.rps:,.0f}" for f in rounds]),
                          cells([f"{f.introspect_cpu:.2f}" for f in rounds]),
                          cells([f"{f.discovery.rps:,.0f}" for f in rounds]),
                          cells([f"{f.discovery_cpu:.2f}" for f in rounds]),
                          cells([f.slow_headers.cell() for f in rounds]),
                          cells([f.slow_bodies.cell() for f in rounds]),
                          cells([str(f.token.non200 + f.introspect.non200
                                     + f.discovery.non200) for f in rounds])]) + " |")
        print()
        for workers in shapes:
            name, why = winner(results[workers])
            print(f"winner, {workers} worker{'s' if workers > 1 else ''}: {name} ({why})")
    finally:
        run.discard(tmp, schema)


if __name__ == "__main__":
    main()
