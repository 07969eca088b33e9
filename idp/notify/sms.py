"""SMS delivery behind one small interface. `outbox` (default) stores messages in a table that
developers and tests read; `http` posts JSON to an operator's gateway with retries, through the
outbound client (idp/core/outbound.py): a gateway on an internal address needs the operator's
allow-list (policies/outbound.toml or IDP_OUTBOUND_ALLOW)."""

from __future__ import annotations

import logging
import time
from typing import Protocol

import requests

from idp import clock
from idp.context import settings
from idp.core import outbound
from idp.extensions import db
from idp.notify.models import SmsOutbox

log = logging.getLogger("idp.notify")


class SmsSender(Protocol):
    def send(self, to: str, body: str) -> bool: ...


class OutboxSender:
    def send(self, to: str, body: str) -> bool:
        db.session.add(SmsOutbox(to=to, body=body, created_at=clock.now()))
        return True


class HttpSender:
    """POST {"to": ..., "message": ...} with a bearer token; 3 tries with back-off."""

    def __init__(self, url: str, token: str | None, http: outbound.OutboundClient,
                 timeout: float = 5.0, tries: int = 3) -> None:
        self.url, self.token, self.http = url, token, http
        self.timeout, self.tries = timeout, tries

    def send(self, to: str, body: str) -> bool:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        for attempt in range(self.tries):
            try:
                response = self.http.post(self.url, json={"to": to, "message": body},
                                          headers=headers, timeout=self.timeout)
                if response.status_code < 500:
                    return response.ok
            except outbound.OutboundRefused as exc:
                # A misconfiguration, not an outage: trying again would not help.
                log.error("sms gateway refused by the outbound policy: %s", exc.reason)
                return False
            except requests.RequestException as exc:
                log.warning("sms gateway try %d failed: %s", attempt + 1, type(exc).__name__)
            time.sleep(0.2 * 2 ** attempt)
        return False


def sender() -> SmsSender:
    conf = settings()
    if conf.sms_backend == "http":
        return HttpSender(conf.sms_gateway_url or "", conf.sms_gateway_token, outbound.client())
    return OutboxSender()
