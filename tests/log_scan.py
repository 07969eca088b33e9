"""pytest plugin: no secret the tests use may appear in any log line of the run.

Every record the app's loggers (and the libraries it drives) emit during the session is written
to one file; tests and helpers register the secrets they handle (passwords, codes, tokens,
client secrets, session cookies, reset tokens) with `register(kind, value)`. At the end of the
session the file, and the stderr/stdout of every server node the tests started, are
scanned; a hit fails the run and names the kind of secret and where, never the secret.

Matching: a secret is found when it occurs anywhere in a line. To keep that fast over a run's
worth of lines, secrets are indexed by an 8-character anchor taken from their longest
alphanumeric run, and every 8-character window of the log's alphanumeric runs is looked up;
a window hit is confirmed with a plain substring test on that line. Secrets without 8
alphanumeric characters in a row (6-digit one-time codes) are matched as a whole
alphanumeric run of the line (so "code=123456" is caught, a timestamp's digits are not).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ANCHOR = 8
MIN_LENGTH = 6
ALNUM = re.compile(r"[A-Za-z0-9]+")
# Loggers captured: the app ("idp" is also Flask's app.logger), the relying-party demo apps,
# and the libraries requests pass through. Not the root logger: Alembic's fileConfig (run by
# every in-process migration) replaces the root logger's handlers.
LOGGERS = ("idp", "clients", "authlib", "joserfc", "werkzeug", "flask_wtf", "flask_limiter",
           "webauthn", "urllib3", "requests", "sqlalchemy", "gunicorn")

_registry: dict[str, str] = {}   # secret -> kind (first kind registered wins)


def register(kind: str, value: object) -> None:
    """Remember a secret the tests used; `kind` names it in a failure ("password", ...)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and len(value) >= MIN_LENGTH:
        _registry.setdefault(value, kind)


def registered() -> dict[str, str]:
    return dict(_registry)


@dataclass(frozen=True)
class Hit:
    kind: str
    source: str
    line_number: int

    def __str__(self) -> str:
        return f"a {self.kind} appears in {self.source} line {self.line_number}"


class Scanner:
    def __init__(self, secrets: dict[str, str]) -> None:
        # anchor size -> anchor -> [(secret, kind)]
        self.anchored: dict[int, dict[str, list[tuple[str, str]]]] = {}
        self.short: dict[str, str] = {}      # purely alphanumeric and shorter than ANCHOR
        self.rest: list[tuple[str, str]] = []  # no alphanumeric run of 3: substring test
        for secret, kind in secrets.items():
            longest = max(ALNUM.findall(secret), key=len, default="")
            if longest == secret and len(secret) < ANCHOR:
                self.short[secret] = kind
            elif len(longest) >= 3:
                size = min(len(longest), ANCHOR)
                self.anchored.setdefault(size, {}).setdefault(longest[:size], []).append(
                    (secret, kind))
            else:
                self.rest.append((secret, kind))

    def line(self, text: str) -> Iterator[str]:
        """The kinds of secret in one line (each once)."""
        found: set[str] = set()
        runs = ALNUM.findall(text)
        for run in runs:
            kind = self.short.get(run)
            if kind is not None and kind not in found:
                found.add(kind)
                yield kind
        for size, table in self.anchored.items():
            for run in runs:
                for start in range(len(run) - size + 1):
                    for secret, kind in table.get(run[start:start + size], ()):
                        if kind not in found and secret in text:
                            found.add(kind)
                            yield kind
        for secret, kind in self.rest:
            if kind not in found and secret in text:
                found.add(kind)
                yield kind

    def scan(self, source: str, lines: Iterable[str]) -> list[Hit]:
        return [Hit(kind, source, number) for number, text in enumerate(lines, 1)
                for kind in self.line(text)]


MAIL_LINK = re.compile(r"/(?:password/reset|account/email/verify|onboarding/[a-z/]+)/"
                       r"([A-Za-z0-9_\-.~]{16,})")
MAIL_CODE = re.compile(r"(?<![0-9])([0-9]{6})(?![0-9])")


def register_mail_secrets(message: object) -> None:
    """Codes and one-time links of an email the IdP sent (the test SMTP server calls this)."""
    try:
        body = message.get_body(preferencelist=("plain", "html")).get_content()
    except Exception:  # noqa: BLE001 - an odd message is not this plugin's concern
        return
    for token in MAIL_LINK.findall(body):
        register("one-time link token (reset or verification)", token)
    for code in MAIL_CODE.findall(body):
        register("emailed one-time code", code)


def scan_files(paths: Iterable[Path], secrets: dict[str, str]) -> list[Hit]:
    scanner = Scanner(secrets)
    hits: list[Hit] = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            hits += scanner.scan(str(path), handle)
    return hits


# -- the plugin ---------------------------------------------------------------------------------
class _Capture:
    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="idp-test-log-", suffix=".log")
        os.close(fd)
        self.path = Path(name)
        from idp.core.request_log import TextFormatter

        self.handler = logging.FileHandler(self.path, encoding="utf-8", delay=False)
        self.handler.setFormatter(TextFormatter())
        self.levels: dict[str, int] = {}

    def start(self) -> None:
        for name in LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self.handler)
        # Everything the app could log, not only what production's levels let through.
        idp = logging.getLogger("idp")
        self.levels["idp"] = idp.level
        idp.setLevel(logging.DEBUG)

    def stop(self) -> None:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(self.handler)
        logging.getLogger("idp").setLevel(self.levels.get("idp", logging.NOTSET))
        self.handler.close()


_capture: _Capture | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _capture
    _capture = _Capture()
    _capture.start()


def _node_logs(config: pytest.Config) -> list[Path]:
    """stderr/stdout files of the server nodes started under this session's temp dir (the e2e
    gunicorn nodes; the `idp serve` processes of tests/integration/test_serve_command.py)."""
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None or factory._basetemp is None:  # no test asked for a temp dir
        return []
    base = factory.getbasetemp()
    patterns = ("gunicorn.stderr", "gunicorn.stdout", "serve.stderr", "serve.stdout")
    return sorted(p for pattern in patterns for p in base.rglob(pattern))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _capture is None:
        return
    _capture.stop()
    secrets = registered()
    files = [_capture.path, *_node_logs(session.config)]
    hits = scan_files(files, secrets)
    lines = sum(1 for path in files for _ in open(path, encoding="utf-8", errors="replace"))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    summary = (f"log scan: {len(secrets)} registered secrets, {lines} log lines in "
               f"{len(files)} file(s): ")
    if hits:
        kinds = sorted({hit.kind for hit in hits})
        message = summary + f"{len(hits)} hit(s) of {', '.join(kinds)}"
        details = "\n".join(f"  {hit}" for hit in hits[:50])
        if reporter:
            reporter.write_sep("=", "SECRETS IN LOGS", red=True)
            reporter.write_line(message)
            reporter.write_line(details)
            reporter.write_line(f"  (log kept at {_capture.path})")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    if reporter:
        reporter.write_sep("-", "log scan")
        reporter.write_line(summary + "no secret found")
    _capture.path.unlink(missing_ok=True)
