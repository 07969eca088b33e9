"""Run a WSGI application behind an ASGI server so that slow clients cannot hold its threads.

A WSGI server gives a request to a Python thread once its headers have arrived; the thread then
blocks in wsgi.input.read() for as long as the client takes to send the body, so a handful of
connections trickling a body a byte a second hold every thread (gunicorn's gthread worker, and
granian's WSGI interface, which hands the request over before the body has arrived).

This adapter is an ASGI application: in the server's event loop it receives the whole body
(at most `max_body` bytes, within `body_timeout` seconds of the headers; else 413 or 408,
answered from the loop), and only then runs the unchanged WSGI application in a bounded pool
of `threads` threads, with a PEP 3333 environ filled as WSGI servers fill it. The response is
sent from the loop, so a client slow to read does not hold a thread either, and the iterable's
close() (Flask's call_on_close work: mails, back-channel logout) runs after the body has been
sent, as under a WSGI server. A response over STREAM_AFTER bytes (the audit export) is streamed
from its thread instead of held in memory.

asgiref's WsgiToAsgi also buffers the body, but runs every request of a process on one thread
(sync_to_async, thread_sensitive), never calls close() and has no bound or timeout; a2wsgi
hands the body to the thread as it arrives, which is the problem itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes

log = logging.getLogger("idp")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Coroutine[Any, Any, None]]
WsgiApp = Callable[[dict, Callable], Iterable[bytes]]
Refused = Callable[[dict, int, float], str | None]  # -> the answer's X-Request-ID

# Threads of the pool per worker when `idp serve --threads` is not given (idp.asgi, idp serve):
# chosen by measurement (bench/servers_ab.py, docs/performance.md section 6): with group commit
# the token endpoint's concurrent requests share one transaction, so eight threads issued the
# most client_credentials tokens per second with the lowest tail of the ASGI candidates, on one
# worker and on two; slow clients hold none of them either way.
DEFAULT_THREADS = 8
# A response body held in memory up to this size is sent from the loop after its thread is
# free; a longer one is streamed from its thread (which then waits on the client's reading).
STREAM_AFTER = 256 * 1024
REFUSALS = {
    400: ("400 Bad Request", "The Content-Length header is not a number."),
    408: ("408 Request Timeout", "The request body did not arrive in time."),
    413: ("413 Content Too Large", "The request body is too large."),
}
_ANSWER_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
                   (b"connection", b"close")]


class WsgiBridge:
    """The ASGI application; see the module docstring."""

    def __init__(self, wsgi_app: WsgiApp, *, threads: int, max_body: int, body_timeout: float,
                 json_paths: tuple[str, ...] = (), refused: Refused | None = None) -> None:
        self.wsgi_app = wsgi_app
        self.threads = threads
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.json_paths = json_paths  # refusals there are OAuth-style JSON, else plain text
        self.refused = refused  # told of each refusal (environ, status, perf_counter at start)
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        # Made on first use, in the worker process (never inherited across a fork).
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="wsgi")
        return self._executor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._executor is not None:  # let running requests and close() work end
                    await asyncio.to_thread(self._executor.shutdown, True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        environ = wsgi_environ(scope)
        body = await self._body(environ, receive)
        if isinstance(body, int):
            await self._refuse(environ, body, started, send)
            return
        if body is None:  # the client went away
            return
        environ["wsgi.input"] = BytesIO(body)
        if body and "CONTENT_LENGTH" not in environ:  # it came chunked: now it has a length
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        exchange = _Exchange(loop, send)
        try:
            result = await loop.run_in_executor(self.executor, exchange.run, self.wsgi_app,
                                                environ)
        except Exception:
            log.exception("unhandled error in the WSGI application on %s %s",
                          environ["REQUEST_METHOD"], environ["PATH_INFO"][:200])
            if not exchange.streaming:
                await _answer(send, 500, "text/plain", b"Server error\n")
            return
        if result is None:  # streamed and closed in its thread
            return
        try:
            await send({"type": "http.response.start", "status": exchange.status,
                        "headers": exchange.headers})
            await send({"type": "http.response.body", "body": b"".join(exchange.chunks)})
        except Exception:  # noqa: BLE001 - the client is gone; close() must still run
            log.debug("response not delivered", exc_info=True)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                # Queued, not awaited: the answer has gone, and waking the loop once more when
                # close() returns cost a fifth of the throughput on cheap requests (measured).
                # The pool runs it in turn; lifespan shutdown waits for it.
                self.executor.submit(close).add_done_callback(_log_close_error)

    async def _body(self, environ: dict, receive: Receive) -> bytes | int | None:
        """The whole body; or the status refusing it (413 at once when Content-Length already
        says too much, 408 when it is late); None when the client disconnected."""
        declared = environ.get("CONTENT_LENGTH")
        if declared is not None:
            if not declared.isdigit():
                return 400
            if int(declared) > self.max_body:
                return 413
        elif "HTTP_TRANSFER_ENCODING" not in environ \
                and environ["SERVER_PROTOCOL"] in ("HTTP/1.1", "HTTP/1.0"):
            return b""  # HTTP/1: no length, not chunked, no body (RFC 9112 §6.3)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > self.max_body:
                            return 413
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return 408
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _refuse(self, environ: dict, status: int, started: float, send: Send) -> None:
        _, message = REFUSALS[status]
        rid = self.refused(environ, status, started) if self.refused is not None else None
        extra = [(b"x-request-id", rid.encode("latin1"))] if rid else []
        if environ["PATH_INFO"].startswith(self.json_paths):
            body = json.dumps({"error": "invalid_request",
                               "error_description": message}).encode()
            await _answer(send, status, "application/json", body, extra)
        else:
            await _answer(send, status, "text/plain; charset=utf-8", message.encode() + b"\n",
                          extra)


async def _answer(send: Send, status: int, content_type: str, body: bytes,
                  extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
        *_ANSWER_HEADERS, *extra]})
    await send({"type": "http.response.body", "body": body})


class _Exchange:
    """One response as the WSGI application gives it: start_response, write, and the
    iteration of its body, run in a pool thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Send) -> None:
        self.loop = loop
        self.send = send
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.streaming = False  # the status line has left: the rest goes out as it comes

    def run(self, wsgi_app: WsgiApp, environ: dict) -> Iterable[bytes] | None:
        """Call the application and collect its body. Returns the iterable, still to close
        once the loop has sent the body; None when the body was streamed (then closed here)."""
        result = wsgi_app(environ, self.start_response)
        try:
            for chunk in result:
                if chunk:
                    self.write(chunk)
            if self.headers is None:
                raise RuntimeError("the application returned without calling start_response")
            if self.streaming:
                self._send_now({"type": "http.response.body", "body": b""})
        except BaseException:
            _close(result)
            raise
        if self.streaming:
            _close(result)
            return None
        return result

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.streaming:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.headers is not None:
            raise RuntimeError("start_response called twice without exc_info")
        self.status = int(status.split(" ", 1)[0])
        self.headers = [(name.lower().encode("latin1"), value.encode("latin1"))
                        for name, value in headers]
        return self.write

    def write(self, data: bytes) -> None:
        if self.streaming:
            self._send_now({"type": "http.response.body", "body": data, "more_body": True})
            return
        self.chunks.append(data)
        self.size += len(data)
        if self.size > STREAM_AFTER and self.headers is not None:
            self.streaming = True
            self._send_now({"type": "http.response.start", "status": self.status,
                            "headers": self.headers})
            self._send_now({"type": "http.response.body", "body": b"".join(self.chunks),
                            "more_body": True})
            self.chunks = []

    def _send_now(self, message: Message) -> None:
        asyncio.run_coroutine_threadsafe(self.send(message), self.loop).result()


def _log_close_error(future: Future) -> None:
    error = future.exception()
    if error is not None:
        log.error("unhandled %s in a response's close()", type(error).__name__,
                  exc_info=error)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def wsgi_environ(scope: Scope) -> dict:
    """A PEP 3333 environ for an ASGI http scope, as gunicorn and granian's WSGI interface fill
    it: PATH_INFO percent-decoded from the raw path and read as latin-1 (so %FF survives),
    QUERY_STRING raw, headers as HTTP_*, repeated ones joined with ',' (Cookie with '; ').
    A header whose name has '_' is dropped, as gunicorn does: as HTTP_X_FORWARDED_FOR it
    would pass for X-Forwarded-For. wsgi.input is set by the caller."""
    raw = scope.get("raw_path")
    if raw:
        path = unquote_to_bytes(raw.partition(b"?")[0]).decode("latin1")
    else:
        path = scope["path"].encode("utf-8").decode("latin1")
    script = scope.get("root_path", "").encode("utf-8").decode("latin1")
    if script and path.startswith(script):
        path = path[len(script):]
    scheme = scope.get("scheme", "http")
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script,
        "PATH_INFO": path,
        "QUERY_STRING": scope.get("query_string", b"").decode("latin1"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    server = scope.get("server")
    default_port = "443" if scheme == "https" else "80"
    if server and server[0]:
        environ["SERVER_NAME"] = str(server[0])
        environ["SERVER_PORT"] = str(server[1]) if server[1] is not None else default_port
    else:  # a unix socket
        environ["SERVER_NAME"], environ["SERVER_PORT"] = "localhost", default_port
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    for name_bytes, value_bytes in scope.get("headers", ()):
        name = name_bytes.decode("latin1").lower()
        if "_" in name:
            continue
        value = value_bytes.decode("latin1")
        if name == "content-type":
            key = "CONTENT_TYPE"
        elif name == "content-length":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        if key in environ:
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    return environ
