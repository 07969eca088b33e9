"""A throw-away Apache httpd of the tests' own, for the relying parties and service providers
that are Apache modules (mod_auth_openidc, mod_auth_mellon): started from a configuration in a
temp dir on a loopback port, ready when `<base>/readyz` answers, stopped by pid."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.helpers import wait_ready

APACHE = "/usr/sbin/apache2"
MODULES = Path("/usr/lib/apache2/modules")


def require_module(name: str, package: str) -> None:
    """Fail (never skip) when Apache or the module is missing."""
    assert Path(APACHE).is_file(), "apache2 is not installed (Debian package apache2)"
    assert (MODULES / name).is_file(), f"{name} is not installed (Debian package {package})"


def run_as() -> str:
    """The configuration's User/Group lines: httpd's children drop root for nobody."""
    return "User nobody\nGroup nogroup" if os.geteuid() == 0 else ""


def output(root: Path) -> str:
    """The end of httpd's stdout and error log, for a failure message."""
    text = ""
    for name in ("stdout", "error.log"):
        path = root / name
        if path.exists():
            text += path.read_text(errors="replace")[-4000:]
    return text


@contextmanager
def running_httpd(conf: Path, base: str, what: str) -> Iterator[subprocess.Popen]:
    """httpd -f conf in the foreground (its stdout in conf's directory) until the block ends."""
    root = conf.parent
    out = (root / "stdout").open("wb")
    proc = subprocess.Popen([APACHE, "-f", str(conf), "-DFOREGROUND"], stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"})
    try:
        wait_ready(proc, lambda: requests.get(f"{base}/readyz", timeout=2),
                   lambda: output(root), what, 20.0)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        out.close()
