"""Getting bytes to a receiver: syslog over TCP (RFC 6587 octet counting) or TLS (RFC 5425),
FHIR resources by HTTP POST. Both go through the outbound rules (idp/core/outbound.py): the
syslog socket is connected to an address the outbound client resolved and checked, the FHIR
POSTs are made by the outbound client itself."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from idp.core import outbound


class SinkError(Exception):
    """The receiver did not take the batch; `reason` is safe to store and show."""

    def __init__(self, reason: str, delivered: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason[:300]
        self.delivered = delivered   # how many of the batch it did take, in order


@dataclass(frozen=True)
class SinkConfig:
    """A sink of the policy with its environment: IDP_AUDIT_SINK_<NAME>_{URL,CA,...}."""

    name: str
    format: str
    url: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    token: str | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.lower()


def send_syslog(sink: SinkConfig, frames: Sequence[bytes], timeout: float) -> None:
    """One connection, every frame in order, then a clean close: the half-close and waiting
    for the receiver to close its side tell us it read everything before we advance."""
    parts = urlsplit(sink.url)
    host, port = parts.hostname, parts.port
    if not host or not port:
        raise SinkError("the sink URL needs a host and a port")
    try:
        addresses = outbound.client().addresses(host, port)
    except outbound.OutboundRefused as exc:
        raise SinkError(f"outbound policy: {exc.reason}") from None
    except OSError as exc:
        raise SinkError(f"cannot resolve the receiver: {exc}") from None
    failure = "no address"
    for ip in addresses:
        try:
            raw = socket.create_connection((str(ip), port), timeout=timeout)
        except OSError as exc:
            failure = f"cannot connect to {ip}:{port}: {exc.strerror or exc}"
            continue
        try:
            _send(raw, sink, host, frames, timeout)
            return
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(f"sending to {ip}:{port} failed: {exc}") from None
        finally:
            raw.close()
    raise SinkError(failure)


def _send(raw: socket.socket, sink: SinkConfig, host: str, frames: Sequence[bytes],
          timeout: float) -> None:
    raw.settimeout(timeout)
    conn: Any = raw
    if sink.scheme == "tls":
        context = ssl.create_default_context(cafile=sink.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if sink.cert:
            context.load_cert_chain(sink.cert, sink.key)
        conn = context.wrap_socket(raw, server_hostname=host)
    conn.sendall(b"".join(frames))
    if sink.scheme == "tls":
        try:
            conn = conn.unwrap()   # close_notify both ways: the receiver read the records
        except (OSError, ssl.SSLError):
            return                 # a receiver that closes without close_notify: sent
    conn.shutdown(socket.SHUT_WR)
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass


def post_fhir(sink: SinkConfig, resources: Sequence[dict[str, Any]], timeout: float) -> None:
    """POST each resource to <base>/AuditEvent in order; stops at the first refusal, saying
    how many were taken (the cursor advances over those)."""
    target = sink.url.rstrip("/") + "/AuditEvent"
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if sink.token:
        headers["Authorization"] = f"Bearer {sink.token}"
    client = outbound.client()
    for index, resource in enumerate(resources):
        try:
            answer = client.post(target, json=resource, headers=headers, timeout=timeout)
        except outbound.OutboundRefused as exc:
            raise SinkError(f"outbound policy: {exc.reason}", index) from None
        except requests.RequestException as exc:
            raise SinkError(f"the FHIR server did not answer: {type(exc).__name__}",
                            index) from None
        if answer.status_code not in (200, 201):
            raise SinkError(f"the FHIR server answered HTTP {answer.status_code}", index)
