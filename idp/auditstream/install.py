"""Plugs the audit stream in: when a request records audit events, deliver them once its
response has gone out (and its transaction committed); `idp audit stream deliver` (cron)
catches up whatever a failure left owed."""

from __future__ import annotations

from flask import Flask, g, has_request_context

from idp.auditstream import service
from idp.context import policy
from idp.core import events
from idp.core.after_response import run_after_response

_QUEUED = "audit_stream_queued"   # g: this request already queued a delivery


def install(app: Flask) -> None:
    rules = app.extensions["idp"].policy.audit_stream
    if not rules.enabled:
        return
    with app.app_context():
        sinks = service.configured()   # a misconfigured sink refuses to start, loudly
    if sinks:
        events.subscribe(app, events.AUDIT_RECORDED, _on_recorded)


def _on_recorded(seq: int) -> None:
    """In a request, once: stream after the response. Elsewhere (CLI, jobs after a response)
    the stream catches up at the next request or the next `idp audit stream deliver`."""
    if not has_request_context() or g.get(_QUEUED):
        return
    g.setdefault(_QUEUED, True)
    run_after_response(lambda: service.deliver_due(policy().audit_stream.after_response_budget))
