"""`idp serve`: the IdP under gunicorn or granian."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from idp.cli.common import json_option, load_app
from idp.web.asgi_bridge import DEFAULT_THREADS as GRANIAN_THREADS

# Each granian worker accepts at most this many connections at once (granian's --backpressure
# gates connections, an idle keep-alive one included, not requests in flight): the bound of
# gunicorn's gthread worker (its default --worker-connections). Requests beyond --threads wait
# for a thread of idp.asgi's pool inside the worker, their bodies already read.
GRANIAN_CONNECTIONS = 1000
# Threads per worker when --threads is not given. granian (idp.asgi's pool): 8, by measurement
# (bench/servers_ab.py, docs/performance.md section 6, 2026-12-06, alternated in one run):
# of granian ASGI x1/x2/x4/x8, gunicorn gthread x4 and gunicorn sync, on 1 worker pinned to one
# core and on 2 workers over two cores, only the granian candidates kept answering ordinary
# token requests (in under 0.1 s) while 50 clients trickled their headers or bodies (gunicorn:
# none of 5 within 3 s, gthread on two workers at best 3), and among them x8 issued the most
# client_credentials tokens per second (group commit batches concurrent requests: 473 against
# 340 for x4 on one core) with a p99 of about 100 ms (x4 on two workers: 680 ms). gunicorn
# gthread keeps its 4.
GUNICORN_THREADS = 4


@click.command("serve")
@click.option("--server", type=click.Choice(["gunicorn", "granian"]), default="granian",
              envvar="IDP_SERVER", show_envvar=True, show_default=True,
              help="granian: reads each request, body included, before a Python thread is "
                   "given it, so clients that trickle their request cannot stall the service; "
                   "gunicorn: per-request timeouts, but its threads wait on slow clients "
                   "(README, Operations, Serving)")
@click.option("--bind", default="127.0.0.1:8000", show_default=True,
              help="HOST:PORT ([V6]:PORT for IPv6), or unix:PATH")
@click.option("--workers", type=click.IntRange(1, 64), default=2, envvar="IDP_WORKERS",
              show_envvar=True, help="worker processes (one per core)")
@click.option("--threads", type=click.IntRange(1, 64), default=None, envvar="IDP_THREADS",
              show_envvar=True,
              help=f"threads per worker that run requests: idp.asgi's pool under granian "
                   f"(default {GRANIAN_THREADS}), gunicorn gthread (default {GUNICORN_THREADS})")
@click.option("--worker-class", type=click.Choice(["sync", "gthread"]), default="gthread",
              show_default=True,
              help="gunicorn only: gthread keeps connections alive (see README, Performance); "
                   "sync serves one request at a time per worker and ignores --threads")
@click.option("--graceful-timeout", type=click.IntRange(1, 600), default=20,
              envvar="IDP_GRACEFUL_TIMEOUT", show_envvar=True, show_default=True,
              help="seconds a worker has to finish its requests on SIGTERM or SIGHUP before "
                   "it is killed")
@json_option
@click.pass_context
def serve_command(ctx: click.Context, server: str, bind: str, workers: int, threads: int | None,
                  worker_class: str, graceful_timeout: int, as_json: bool) -> None:
    """Run the IdP under granian (default, 8 threads per worker) or gunicorn. SIGHUP to this
    process (it becomes the server's master) replaces the workers gracefully; SIGTERM stops.

    The defaults are the winner of bench/servers_ab.py (docs/performance.md section 6): slow
    clients starve gunicorn (sync and gthread) and none of granian's ASGI candidates; of those,
    eight threads issued the most tokens per second with a p99 near the best."""
    import os

    if threads is None:
        threads = GRANIAN_THREADS if server == "granian" else GUNICORN_THREADS

    if server == "granian":
        if ctx.get_parameter_source("worker_class") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--worker-class is a gunicorn option: add --server gunicorn")
        address = _granian_bind(bind)
    elif worker_class == "sync":
        threads = 1  # gunicorn would silently switch a sync worker with threads to gthread
    app = load_app()  # validate configuration and create keys once, before forking workers
    _prepare_metrics(app)
    # Structured logs by default in production; the app writes one line per request, so the
    # server's own access log is off (it would be a second, less informative line).
    log_format = os.environ.get("IDP_LOG_FORMAT") or "json"
    if as_json:
        click.echo(json.dumps({"server": server, "bind": bind, "workers": workers,
                               "threads": threads,
                               "worker_class": worker_class if server == "gunicorn" else None,
                               "graceful_timeout": graceful_timeout}))
    if server == "granian":
        # granian's ASGI interface on idp.asgi: each request's body is read in the event loop
        # (bounded by web.toml's max_body_bytes and body_read_timeout_seconds) before one of
        # the --threads threads runs the WSGI application, so slow clients hold no thread
        # (idp.web.asgi_bridge; granian's WSGI interface hands a thread the request before its
        # body has arrived). No per-request timeout exists (README, Operations); the header
        # read timeout (30 s, granian's default) bounds slow headers and idle keep-alive
        # connections. Without a kill timeout granian's master waits for ever for a worker
        # that does not stop (2.8.7 now and then leaves one hanging after SIGTERM).
        os.execvpe(sys.executable, [sys.executable, "-m", "granian", "--interface", "asgi",
                                    *address, "--workers", str(workers), "--no-ws",
                                    "--backpressure", str(GRANIAN_CONNECTIONS),
                                    "--workers-kill-timeout", str(graceful_timeout),
                                    "--respawn-failed-workers",
                                    "--no-access-log", "--log-level", "warning",
                                    "idp.asgi:app"],
                   {**os.environ, "IDP_LOG_FORMAT": log_format, "IDP_THREADS": str(threads)})
        return  # only when execvpe is stubbed (tests)
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "--bind", bind,
                               "--workers", str(workers), "--threads", str(threads),
                               "--worker-class", worker_class,
                               "--timeout", "30", "--graceful-timeout", str(graceful_timeout),
                               "--no-control-socket",
                               "--logger-class", "idp.web.access_log.RedactingLogger",
                               "--config", "python:idp.web.gunicorn_hooks",
                               "--env", f"IDP_LOG_FORMAT={log_format}",
                               "idp.wsgi:app"])


def _granian_bind(bind: str) -> list[str]:
    """gunicorn's --bind forms as granian options: HOST:PORT, [V6]:PORT, HOST (port 8000),
    unix:PATH."""
    if bind.startswith("unix:"):
        if not bind[5:]:
            raise click.BadParameter("unix: needs a path", param_hint="--bind")
        return ["--uds", bind[5:]]
    if bind.startswith("["):
        host, _, rest = bind[1:].partition("]")
        port = rest.removeprefix(":") if rest else "8000"
        if rest and not rest.startswith(":"):
            raise click.BadParameter(f"{bind!r} is not [HOST]:PORT", param_hint="--bind")
    elif bind.count(":") > 1:
        raise click.BadParameter(f"{bind!r}: write an IPv6 address as [ADDRESS]:PORT",
                                 param_hint="--bind")
    else:
        host, _, port = bind.partition(":")
        port = port or "8000"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{bind!r} is not HOST:PORT", param_hint="--bind")
    return ["--host", host, "--port", port]


def _prepare_metrics(app: Any) -> None:
    """With IDP_METRICS_TOKEN, the workers (granian's or gunicorn's, processes either way)
    share samples through prometheus-client's multiprocess mode: an emptied directory under
    the instance directory, unless the operator chose one (PROMETHEUS_MULTIPROC_DIR). The
    server inherits the variable through exec."""
    import os
    import shutil

    settings = app.extensions["idp"].settings
    if settings.metrics_token is None or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = settings.instance_dir / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
