"""idp.web.asgi_bridge driven as an ASGI server drives it (receive/send coroutines), with WSGI
applications that record what they were given: the body is read whole before a pool thread
runs the application, refusals never reach it, the environ is a WSGI server's, the response
is sent before close() runs, and no more than `threads` requests run at once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable, Iterator

from idp.web import asgi_bridge
from idp.web.asgi_bridge import WsgiBridge, wsgi_environ

SCOPE = {"type": "http", "http_version": "1.1", "method": "GET", "scheme": "http",
         "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
         "server": ("127.0.0.1", 8000), "client": ("192.0.2.7", 51000), "headers": []}


def scope(**changes: object) -> dict:
    return {**SCOPE, **changes}


class Client:
    """The server side of one exchange: the body messages to hand out, what was sent back."""

    def __init__(self, *bodies: bytes, stall: bool = False) -> None:
        self.bodies = list(bodies) or [b""]
        self.stall = stall  # after the given messages, wait for ever (a trickling client)
        self.received = 0  # receive() calls answered
        self.sent: list[dict] = []
        self.events: list[str] = []  # shared with the application: sends and close, in order

    async def receive(self) -> dict:
        if not self.bodies:
            assert self.stall, "the bridge read past the last message"
            await asyncio.sleep(3600)
        chunk = self.bodies.pop(0)
        self.received += 1
        return {"type": "http.request", "body": chunk,
                "more_body": bool(self.bodies) or self.stall}

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        self.events.append(message["type"])

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


class Recorder:
    """A WSGI application: records each environ and body it got, answers `answer`."""

    def __init__(self, answer: Iterable[bytes] = (b"ok",), events: list[str] | None = None,
                 status: str = "200 OK") -> None:
        self.answer = answer
        self.status = status
        self.events = events
        self.environs: list[dict] = []
        self.bodies: list[bytes] = []
        self.threads: list[str] = []
        self.closed_in: list[str] = []

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:  # noqa: ANN001
        self.environs.append(environ)
        self.bodies.append(environ["wsgi.input"].read())
        self.threads.append(threading.current_thread().name)
        start_response(self.status, [("Content-Type", "text/plain"), ("X-One", "1")])
        return _Closing(self.answer, self)


class _Closing:
    def __init__(self, chunks: Iterable[bytes], app: Recorder) -> None:
        self.chunks = chunks
        self.app = app

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.app.closed_in.append(threading.current_thread().name)
        if self.app.events is not None:
            self.app.events.append("close")


def bridge(app, **options: object) -> WsgiBridge:  # noqa: ANN001
    settings = {"threads": 2, "max_body": 1024, "body_timeout": 5.0, **options}
    return WsgiBridge(app, **settings)


def run(the_bridge: WsgiBridge, client: Client, **changes: object) -> Client:
    """One exchange; then the pool is drained (close() is queued, not awaited)."""
    asyncio.run(the_bridge(scope(**changes), client.receive, client.send))
    the_bridge.executor.shutdown(wait=True)
    return client


def post(length: int | None, **changes: object) -> dict:
    headers = [(b"content-type", b"application/x-www-form-urlencoded")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"method": "POST", "path": "/token", "raw_path": b"/token", "headers": headers,
            **changes}


# -- the body, before the application ------------------------------------------------------------
def test_the_application_gets_the_whole_body_read_before_it_runs_in_a_pool_thread():
    app = Recorder()
    client = run(bridge(app), Client(b"grant_type=", b"client_", b"credentials"), **post(33))
    assert client.received == 3
    assert app.bodies == [b"grant_type=client_credentials"]
    assert app.environs[0]["CONTENT_LENGTH"] == "33"
    assert app.threads[0].startswith("wsgi") and app.threads[0] != "MainThread"
    assert client.status == 200 and client.body == b"ok"
    assert client.headers[b"content-type"] == b"text/plain" and client.headers[b"x-one"] == b"1"


def test_a_chunked_body_reaches_the_application_with_its_length():
    app = Recorder()
    headers = [(b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")]
    run(bridge(app), Client(b"abc", b"def"), **post(None, headers=headers))
    assert app.bodies == [b"abcdef"]
    assert app.environs[0]["CONTENT_LENGTH"] == "6"
    assert "HTTP_TRANSFER_ENCODING" not in app.environs[0]


def test_a_declared_length_over_the_limit_is_refused_with_413_before_any_byte_is_read():
    app = Recorder()
    client = run(bridge(app, json_paths=("/token",)), Client(b"x" * 10), **post(10_000_000))
    assert client.received == 0 and app.environs == []
    assert client.status == 413
    assert json.loads(client.body)["error"] == "invalid_request"
    assert client.headers[b"content-type"] == b"application/json"
    assert client.headers[b"connection"] == b"close"


def test_a_body_growing_past_the_limit_is_refused_with_413_without_reading_the_rest():
    app = Recorder()
    chunks = [b"x" * 600] * 10  # 6000 bytes offered, 1024 allowed: refused at the second
    headers = [(b"transfer-encoding", b"chunked")]
    client = run(bridge(app), Client(*chunks), **post(None, headers=headers, path="/login",
                                                     raw_path=b"/login"))
    assert client.received == 2 and app.environs == []
    assert client.status == 413
    assert client.headers[b"content-type"].startswith(b"text/plain")
    assert b"too large" in client.body


def test_a_body_still_arriving_at_the_timeout_is_refused_with_408_and_never_reaches_the_app():
    app = Recorder()
    seen = []
    refused = bridge(app, body_timeout=0.2, max_body=65536, json_paths=("/token",),
                     refused=lambda environ, status, started: seen.append(status) or "rid-1")
    client = run(refused, Client(b"grant_type=", stall=True), **post(60_000))
    assert app.environs == []
    assert client.status == 408
    assert json.loads(client.body)["error_description"] == \
        "The request body did not arrive in time."
    assert client.headers[b"x-request-id"] == b"rid-1" and seen == [408]


def test_a_client_gone_before_its_body_ends_runs_nothing():
    app = Recorder()

    class Gone(Client):
        async def receive(self) -> dict:
            self.received += 1
            return {"type": "http.disconnect"}

    client = run(bridge(app), Gone(), **post(10))
    assert app.environs == [] and client.sent == []


def test_an_http1_request_without_length_or_chunks_has_no_body_to_wait_for():
    app = Recorder()
    client = run(bridge(app), Client(stall=True))  # would time out, were it read
    assert client.received == 0 and app.bodies == [b""] and client.status == 200
    app = Recorder()
    client = run(bridge(app), Client(b"data"), http_version="2")  # HTTP/2: DATA frames
    assert client.received == 1 and app.bodies == [b"data"]


def test_a_content_length_that_is_not_a_number_is_a_400():
    app = Recorder()
    client = run(bridge(app), Client(b"x"), **post(None, headers=[(b"content-length", b"1x")]))
    assert client.status == 400 and app.environs == []


# -- the response, then close() ------------------------------------------------------------------
def test_close_runs_in_a_pool_thread_after_the_body_has_been_sent():
    client = Client()
    app = Recorder(answer=[b"a", b"b"], events=client.events)
    run(bridge(app), client)
    assert client.events == ["http.response.start", "http.response.body", "close"]
    assert client.body == b"ab"
    assert app.closed_in[0].startswith("wsgi")


def test_close_runs_when_the_client_is_gone_before_the_answer():
    client = Client()
    app = Recorder(events=client.events)

    async def broken(message: dict) -> None:
        raise OSError("connection reset")

    the_bridge = bridge(app)
    asyncio.run(the_bridge(scope(), client.receive, broken))
    the_bridge.executor.shutdown(wait=True)
    assert app.closed_in and client.events == ["close"]


def test_a_large_answer_is_streamed_from_its_thread_and_closed_after_it(monkeypatch):
    monkeypatch.setattr(asgi_bridge, "STREAM_AFTER", 10)
    client = Client()
    chunks = [b"0123456789"] * 5
    app = Recorder(answer=chunks, events=client.events)
    run(bridge(app), client)
    assert client.body == b"".join(chunks)
    assert client.events[0] == "http.response.start" and client.events[-1] == "close"
    assert client.events.count("http.response.body") > 2  # not held until the end
    assert client.sent[-1]["type"] == "http.response.body"
    assert not client.sent[-1].get("more_body")


def test_an_application_that_raises_gets_a_500_and_the_error_is_logged(caplog):
    def boom(environ: dict, start_response) -> list[bytes]:  # noqa: ANN001
        raise RuntimeError("broken")

    client = run(bridge(boom), Client())
    assert client.status == 500 and b"broken" not in client.body
    assert "RuntimeError" in caplog.text or "broken" in caplog.text


def test_start_response_again_with_exc_info_replaces_the_status_before_anything_is_sent():
    import sys

    def app(environ: dict, start_response) -> list[bytes]:  # noqa: ANN001
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("late")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"later"]

    client = run(bridge(app), Client())
    assert client.status == 503 and client.body == b"later"


# -- threads ---------------------------------------------------------------------------------------
def test_no_more_than_threads_requests_run_at_once_and_the_rest_wait_with_their_bodies_read():
    running, peak, lock = [0], [0], threading.Lock()
    release = threading.Event()

    def slow(environ: dict, start_response) -> list[bytes]:  # noqa: ANN001
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(5)
        with lock:
            running[0] -= 1
        start_response("200 OK", [])
        return [b""]

    the_bridge = bridge(slow, threads=2)

    async def main() -> list[Client]:
        clients = [Client(b"x") for _ in range(5)]
        tasks = [asyncio.create_task(the_bridge(scope(**post(1)), c.receive, c.send))
                 for c in clients]
        while running[0] < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # time for a third to start, were the pool not bounded
        assert running[0] == 2 and all(c.received == 1 for c in clients)
        release.set()
        await asyncio.gather(*tasks)
        return clients

    clients = asyncio.run(main())
    assert peak[0] == 2 and all(c.status == 200 for c in clients)


def test_lifespan_shutdown_waits_for_the_close_work_still_queued():
    go, closed = threading.Event(), []

    class Slow(list):
        def close(self) -> None:  # a mail or a back-channel logout after the answer
            go.wait(10)
            closed.append(True)

    def app(environ: dict, start_response) -> list[bytes]:  # noqa: ANN001
        start_response("200 OK", [])
        return Slow([b"ok"])

    the_bridge = bridge(app)
    client = Client()
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message["type"])

    async def main() -> None:
        await the_bridge(scope(), client.receive, client.send)
        assert client.status == 200 and not closed  # answered; close() still running
        lifespan = asyncio.create_task(the_bridge({"type": "lifespan"}, receive, send))
        while not sent:
            await asyncio.sleep(0.01)
        assert sent == ["lifespan.startup.complete"]
        await asyncio.sleep(0.1)
        assert sent == ["lifespan.startup.complete"] and not closed  # shutdown waits
        go.set()
        await lifespan

    asyncio.run(main())
    assert closed and sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_an_error_in_close_is_logged(caplog):
    class Broken(list):
        def close(self) -> None:
            raise ValueError("close failed")

    def app(environ: dict, start_response) -> list[bytes]:  # noqa: ANN001
        start_response("200 OK", [])
        return Broken([b"ok"])

    client = run(bridge(app), Client())
    assert client.status == 200 and "ValueError in a response's close()" in caplog.text


# -- the environ -----------------------------------------------------------------------------------
def test_the_environ_is_what_gunicorn_and_granians_wsgi_interface_give():
    """Values as both fill them for `POST /a%20b/%C3%A9%2Fx/%FF;p?q=%20x&y=%C3` (measured):
    PATH_INFO percent-decoded from the raw path and read as latin-1, the query string raw."""
    environ = wsgi_environ(scope(
        method="POST", path="/a b/\u00e9/x/\ufffd;p", raw_path=b"/a%20b/%C3%A9%2Fx/%FF;p",
        query_string=b"q=%20x&y=%C3", server=("127.0.0.1", "18602"),
        client=("127.0.0.1", "34412"),
        headers=[(b"host", b"ex.org:8080"), (b"cookie", b"a=1"), (b"cookie", b"b=2"),
                 (b"x-a", b"1"), (b"x-a", b"2"), (b"content-type", b"text/plain"),
                 (b"content-length", b"3")]))
    assert environ["REQUEST_METHOD"] == "POST" and environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == "/a b/\u00c3\u00a9/x/\u00ff;p"
    assert environ["QUERY_STRING"] == "q=%20x&y=%C3"
    assert environ["SERVER_NAME"] == "127.0.0.1" and environ["SERVER_PORT"] == "18602"
    assert environ["REMOTE_ADDR"] == "127.0.0.1" and environ["REMOTE_PORT"] == "34412"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1" and environ["wsgi.url_scheme"] == "http"
    assert environ["HTTP_HOST"] == "ex.org:8080" and environ["HTTP_X_A"] == "1,2"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"  # RFC 6265 §5.4: one header, '; '
    assert environ["CONTENT_TYPE"] == "text/plain" and environ["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert environ["wsgi.multithread"] and environ["wsgi.multiprocess"]
    assert not environ["wsgi.run_once"] and environ["wsgi.version"] == (1, 0)


def test_a_header_with_an_underscore_is_dropped_not_taken_for_its_dashed_twin():
    environ = wsgi_environ(scope(headers=[(b"x_forwarded_for", b"203.0.113.9"),
                                          (b"x-forwarded-for", b"198.51.100.1")]))
    assert environ["HTTP_X_FORWARDED_FOR"] == "198.51.100.1"


def test_root_path_is_the_script_name_and_https_the_scheme():
    environ = wsgi_environ(scope(path="/idp/token", raw_path=b"/idp/token", root_path="/idp",
                                 scheme="https", server=None, client=None))
    assert environ["SCRIPT_NAME"] == "/idp" and environ["PATH_INFO"] == "/token"
    assert environ["wsgi.url_scheme"] == "https" and environ["SERVER_PORT"] == "443"
    assert "REMOTE_ADDR" not in environ


def test_without_a_raw_path_the_decoded_path_is_used():
    environ = wsgi_environ(scope(path="/caf\u00e9", raw_path=None))
    assert environ["PATH_INFO"] == "/caf\u00c3\u00a9"
