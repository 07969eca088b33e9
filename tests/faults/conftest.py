"""Fault tests: a gunicorn node of the IdP started with environment overrides (a database or
Redis behind a TCP proxy the test controls)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.conftest import Server, free_port, gunicorn_process


@contextmanager
def gunicorn_node(env: dict[str, str], log_dir: Path, **overrides: str) -> Iterator[Server]:
    """One gunicorn worker (in-process fallbacks are then per node, as in production per
    worker) with `env` plus `overrides`; yields the Server; stops it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **env, "IDP_ISSUER": base, **overrides}
    child_env.pop("IDP_PROXY_HOPS", None)
    with gunicorn_process(["--workers", "1", "--threads", "4", "--worker-class", "gthread",
                           "--graceful-timeout", "5", "--timeout", "60"], port, child_env,
                          Server(base, log_dir)) as server:
        yield server
