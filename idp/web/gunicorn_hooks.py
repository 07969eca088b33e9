"""gunicorn server hooks (`idp serve` passes --config python:idp.web.gunicorn_hooks)."""

from __future__ import annotations

import os
from typing import Any


def child_exit(_server: Any, worker: Any) -> None:
    """A worker ended: its live samples leave the multiprocess metrics (idp.core.metrics)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
