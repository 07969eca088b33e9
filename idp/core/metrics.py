"""Prometheus metrics at /metrics (prometheus-client), only when IDP_METRICS_TOKEN is set, and
only for a request with `Authorization: Bearer <IDP_METRICS_TOKEN>` (else 404 / 401).

- idp_http_requests_total{route, method, status} and idp_http_request_duration_seconds{route}:
  `route` is the URL rule (/admin/users/<int:user_id>), never the raw path, so the label set
  stays bounded;
- idp_logins_total{outcome}, idp_lockouts_total, idp_tokens_issued_total{grant_type},
  idp_alerts_raised_total{kind}: counted from the audit events of a transaction when it
  commits (a rolled-back change counts nothing), so they agree with the audit trail.

Several processes (granian's or gunicorn's workers): prometheus-client's multiprocess mode.
`idp serve` sets PROMETHEUS_MULTIPROC_DIR (a fresh directory under the instance directory) when
the token is set, each worker writes its samples there, and a scrape of any worker sums every
worker's, those of workers that have ended included (a reload or respawn loses no count).
gunicorn's child_exit hook (idp.web.gunicorn_hooks) marks dead workers; granian has no such
hook, and none is needed while every metric here is a counter or a histogram: marking a process
dead only removes its live-gauge files.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

from flask import Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from sqlalchemy import event
from sqlalchemy.orm import Session

from idp.context import settings

REQUESTS = Counter("idp_http_requests", "HTTP requests by route, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("idp_http_request_duration_seconds", "Time to answer a request, by route",
                    ["route"])
LOGINS = Counter("idp_logins", "Completed sign-ins (success) and refused passwords (failure)",
                 ["outcome"])
LOCKOUTS = Counter("idp_lockouts", "Accounts locked after failed attempts")
TOKENS = Counter("idp_tokens_issued", "Token responses by grant type", ["grant_type"])
ALERTS = Counter("idp_alerts_raised", "Security alerts raised, by kind", ["kind"])

_PENDING = "idp_metrics_pending"


def note(session: Session, name: str, detail: dict[str, Any]) -> None:
    """Called by audit.record: count this event if its transaction commits."""
    if name in ("login.success", "login.failure", "account.locked", "token.issued") or (
            name.startswith("alert.") and name != "alert.state_changed"):
        session.info.setdefault(_PENDING, []).append(
            (name, str(detail.get("grant_type", ""))[:40]))


def count(name: str, detail: dict[str, Any]) -> None:
    """Count an event whose transaction has committed (the group committer's batches)."""
    if name in ("login.success", "login.failure", "account.locked", "token.issued") or (
            name.startswith("alert.") and name != "alert.state_changed"):
        _count(name, str(detail.get("grant_type", ""))[:40])


def _count(name: str, grant_type: str) -> None:
    if name == "login.success":
        LOGINS.labels("success").inc()
    elif name == "login.failure":
        LOGINS.labels("failure").inc()
    elif name == "account.locked":
        LOCKOUTS.inc()
    elif name == "token.issued":
        TOKENS.labels(grant_type or "unknown").inc()
    else:
        ALERTS.labels(name.removeprefix("alert.")).inc()


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    for item in session.info.pop(_PENDING, ()):
        _count(*item)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


_STARTED = "idp.metrics_started"


def _started() -> None:
    request.environ[_STARTED] = time.perf_counter()


def _finished(response: Response) -> Response:
    started = request.environ.pop(_STARTED, None)
    if started is not None:
        rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        observe(rule, request.method, response.status_code, time.perf_counter() - started)
    return response


def observe(rule: str, method: str, status: int, seconds: float) -> None:
    """One request's sample (also for answers given in front of Flask)."""
    key = (rule, method, status)
    children = _CHILDREN.get(key)
    if children is None:  # labels() validates and locks on every call: once per label set
        children = _CHILDREN[key] = (REQUESTS.labels(rule, method, str(status)),
                                     LATENCY.labels(rule))
    children[0].inc()
    children[1].observe(seconds)


# (route rule, method, status) -> its samples; bounded like the label set itself.
_CHILDREN: dict[tuple[str | None, str, int], tuple[Any, Any]] = {}


def exposition() -> bytes:
    """Every worker's samples in multiprocess mode, this process's otherwise."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def metrics_view() -> Response:
    token = settings().metrics_token
    if token is None:
        return Response("Not found\n", status=404, mimetype="text/plain")
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                             token.encode()):
        return Response("Unauthorized\n", status=401, mimetype="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return Response(exposition(), mimetype=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


def install(app: Flask) -> None:
    app.before_request(_started)
    app.after_request(_finished)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
