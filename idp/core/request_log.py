"""Structured logs: one line per request (request id, route, method, status, latency, the
account's subject and the client when known), as JSON (`IDP_LOG_FORMAT=json`, the default
under `idp serve`) or as text.

The line names the route *rule* (`/password/reset/<token>`), never the path or the query
string: paths and queries carry one-time tokens, codes and ID token hints.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_app_context, request

from idp.core import metrics

log = logging.getLogger("idp.request")

# A caller's X-Request-ID is honoured when it looks like an id (a proxy's or a client's);
# anything else is replaced, so a header cannot inject text into a log line.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def note(*, sub: str | None = None, client_id: str | None = None) -> None:
    """Tell the request's log line who it was for (the account's subject, the client)."""
    if not has_app_context():
        return
    if sub:
        g.log_sub = sub
    if client_id:
        g.log_client_id = client_id


STARTED, ID = "idp.request_started", "idp.request_id"  # kept in the WSGI environ


def request_id() -> str:
    return request.environ.get(ID, "")


def request_id_for(given: str) -> str:
    """The caller's X-Request-ID when it looks like an id, a new one otherwise."""
    return given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def log_wsgi_answer(environ: dict, rid: str, route: str, status: int, started: float,
                    client_id: str | None = None) -> None:
    """The request line and metrics sample of an answer given in front of Flask (the public
    documents' replay, the fast lane): the same fields a Flask answer logs."""
    elapsed = time.perf_counter() - started
    if log.isEnabledFor(logging.INFO):
        log.info("request", extra={"fields": {
            "request_id": rid, "method": environ.get("REQUEST_METHOD"), "route": route,
            "status": status, "latency_ms": round(elapsed * 1000, 2), "user": None,
            "client_id": client_id, "remote_addr": environ.get("REMOTE_ADDR")}})
    metrics.observe(route, environ.get("REQUEST_METHOD", ""), status, elapsed)


def _start() -> None:
    request.environ[STARTED] = time.perf_counter()
    request.environ[ID] = request_id_for(request.headers.get("X-Request-ID", ""))


def _subject() -> str | None:
    sub = g.get("log_sub")
    if sub:
        return sub
    sso = g.get("sso_session")
    if sso is not None:
        try:
            return sso.user.subject
        except Exception:  # noqa: BLE001 - a detached row must not cost the response
            return None
    return None


def _finish(response: Response) -> Response:
    if ID not in request.environ:  # a hook before ours answered: still give the line an id
        request.environ[ID] = uuid.uuid4().hex
    response.headers["X-Request-ID"] = request.environ[ID]
    started = request.environ.get(STARTED)
    rule = request.url_rule.rule if request.url_rule is not None else None
    fields = {
        "request_id": request.environ[ID],
        "method": request.method,
        "route": rule,
        "status": response.status_code,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
        "user": _subject(),
        "client_id": g.get("log_client_id"),
        "remote_addr": request.remote_addr,
    }
    log.info("request", extra={"fields": fields})
    return response


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The classic line, with the record's `fields` appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return text


def configure(log_format: str) -> None:
    """`idp` loggers to stderr in the chosen format; idempotent (one handler). Called by the
    WSGI entry point (gunicorn), not by create_app: CLI commands and tests keep their own
    logging set-up."""
    # Neither format prints where a line was logged from: skip the stack walk that finds it
    # for every record (the logging HOWTO's "Optimization"; a fifth of a replayed answer).
    logging._srcfile = None  # type: ignore[attr-defined]
    logger = logging.getLogger("idp")
    for handler in [h for h in logger.handlers if getattr(h, "idp_handler", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.idp_handler = True
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.addHandler(handler)


def install(app: Flask) -> None:
    # Request lines at INFO; the rest of `idp` keeps its level (warnings and errors).
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    # First of the before_request hooks, so a hook that answers early still has an id and a
    # start time; after_request hooks run in reverse order of registration, this one last.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request_funcs.setdefault(None, []).insert(0, _finish)
