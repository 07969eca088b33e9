"""Work that runs once the response has gone out: the one way to do it.

A request queues a job with `run_after_response(job)`; the job runs when the server closes the
response (werkzeug's `call_on_close`), so how long it takes (an SMTP server, a relying party's
back-channel endpoint) neither delays the answer nor shows in its timing. Each job runs in a
fresh application context of its own (its own database session: it commits what it writes)
and a failure is logged and rolled back, never raised: the response has been sent already.

Outside a request (the CLI, a job already running after a response) there is no response to
wait for: the job runs at once.

`install(app)` adds the after_request hook that hands the queued jobs to the response; it runs
after every other hook (installed first of all: Flask runs after_request hooks in reverse
order), so a hook may itself queue work (idp.sessions.service.settle ending an expired session
owes back-channel logouts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, current_app, g, has_request_context
from werkzeug.wrappers import Response

from idp.extensions import db

log = logging.getLogger("idp.after_response")

Job = Callable[[], object]
_QUEUE = "after_response_jobs"   # g: this request's jobs, in order


def run_after_response(job: Job) -> None:
    """Run `job()` once this request's response has been sent (at once outside a request);
    its result is ignored."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not has_request_context():
        _run(app, job)
        return
    g.setdefault(_QUEUE, []).append(job)


def _run(app: Flask, job: Job) -> None:
    with app.app_context():
        try:
            job()
        except Exception:  # noqa: BLE001 - after the response: log; queues retry their rows
            db.session.rollback()
            log.exception("work after the response failed")


def _attach(response: Response) -> Response:
    """after_request, last of all: the queued jobs run when the response is closed."""
    jobs: list[Job] = g.pop(_QUEUE, None) or []
    if jobs:
        app = current_app._get_current_object()  # type: ignore[attr-defined]

        def _run_all() -> None:
            for job in jobs:
                _run(app, job)

        response.call_on_close(_run_all)
    return response


def install(app: Flask) -> None:
    app.after_request_funcs.setdefault(None, []).insert(0, _attach)
