"""ASGI entry point of `idp serve` (granian --interface asgi): the WSGI application of
idp.wsgi behind idp.web.asgi_bridge, which reads each request's body in the event loop before a
thread of the pool (IDP_THREADS, set by `idp serve --threads`) runs it."""

import os

from idp.core import request_log
from idp.web.asgi_bridge import DEFAULT_THREADS, WsgiBridge
from idp.web.security import PROTOCOL_PATHS
from idp.wsgi import app as wsgi_app

ROUTE = "<body refused>"  # route of a request refused before the application (log, metrics)


def _refused(environ: dict, status: int, started: float) -> str:
    """The request line and metrics sample of a refusal, as the application logs its own;
    returns the request id the answer carries."""
    rid = request_log.request_id_for(environ.get("HTTP_X_REQUEST_ID", ""))
    request_log.log_wsgi_answer(environ, rid, ROUTE, status, started)
    return rid


_rules = wsgi_app.extensions["idp"].policy.web  # web.toml
app = WsgiBridge(wsgi_app, threads=int(os.environ.get("IDP_THREADS") or DEFAULT_THREADS),
                 max_body=_rules.max_body_bytes, body_timeout=_rules.body_read_timeout_seconds,
                 json_paths=PROTOCOL_PATHS, refused=_refused)
