"""The IdP as a package: a wheel built from the tree (`pip wheel .`), installed with its
dependencies into a fresh virtualenv in a temporary directory, run from another temporary
directory (neither the checkout nor PYTHONPATH in sight): `idp db upgrade`, `idp demo seed`,
`idp serve`; the login page is the styled one (its stylesheet is the packaged file) and
discovery answers. Nothing points at the checkout: no IDP_POLICY_DIR, IDP_KEYS_DIR or
IDP_INSTANCE_DIR, so the policies, templates, static files and migrations can only come from
the wheel, and instance/ and keys/ land in the working directory.

The wheel is built from a copy of the tree: `pip wheel .` in the checkout leaves a build/
directory whose stale files a later build would carry into the wheel, hiding lost package data.
The dependencies are installed by pip as a user would (no .pth onto the test venv's
site-packages, which would hide a dependency missing from pyproject.toml); they come from the
package index or pip's cache, about 15 s of the test's 30-40 s on this machine. It needs the
index that `make install` needs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from idp.config import PROJECT_ROOT
from tests.conftest import _database
from tests.e2e.conftest import free_port
from tests.helpers import wait_ready

pytestmark = pytest.mark.e2e

# What a copy of the tree leaves out: local state and build output at the top (idp/keys/ is
# a package), caches anywhere.
TOP_JUNK = {".git", ".venv", "venv", "build", "dist", "instance", "keys", "test-results"}
JUNK = shutil.ignore_patterns("*.egg-info", "node_modules", "__pycache__", "*.pyc",
                              ".pytest_cache", ".ruff_cache")


def _ignore(directory: str, names: list[str]) -> set[str]:
    top = TOP_JUNK.intersection(names) if Path(directory) == PROJECT_ROOT else set()
    return top | JUNK(directory, names)
# Directories of non-Python files the running IdP and the demo clients read.
DATA_DIRS = ("idp/templates", "idp/static", "idp/policies", "idp/migrations",
             "clients/static", "clients/ehr", "clients/portal", "clients/smart_app")


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
         ) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n" \
                                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _clean_env(venv: Path) -> dict[str, str]:
    """A shell's environment with the venv's bin first and nothing of this test run's
    (no PYTHONPATH, no IDP_* settings, no DATABASE_URL)."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_CERT", "PIP_FIND_LINKS",
            "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK", "SSL_CERT_FILE")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


@pytest.fixture
def database_url(tmp_path: Path):
    """None on SQLite (the IdP's default, a file in instance/); on PostgreSQL a schema of
    its own, dropped afterwards."""
    if not os.environ.get("DATABASE_URL"):
        yield None
        return
    url, schema = _database(tmp_path)
    yield url
    engine = sa.create_engine(url.split("?", 1)[0])
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    shutil.copytree(PROJECT_ROOT, source, ignore=_ignore, symlinks=True)
    dist = tmp_path / "dist"
    env = {**os.environ}
    env.pop("PYTHONPATH", None)
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", str(dist)], source, env)
    (wheel,) = dist.glob("healthcare_idp-*.whl")
    return wheel


def _assert_carries_package_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {path.relative_to(PROJECT_ROOT).as_posix()
                for top in DATA_DIRS for path in (PROJECT_ROOT / top).rglob("*")
                if path.is_file() and "__pycache__" not in path.parts}
    expected.add("idp/web/openapi.json")
    assert any(name.startswith("idp/templates/") for name in expected)
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {len(missing)} data files: {missing[:10]}"


def test_wheel_installs_migrates_seeds_and_serves(tmp_path: Path, database_url: str | None):
    wheel = _build_wheel(tmp_path)
    _assert_carries_package_data(wheel)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, _clean_env(venv))
    env = _clean_env(venv)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
         tmp_path, env)

    workdir = tmp_path / "deployment"
    workdir.mkdir()
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import clients, idp; print(idp.__file__); print(clients.__file__)"],
                 workdir, env).stdout.split()
    for module_file in where:
        assert Path(module_file).is_relative_to(venv), where
        assert not Path(module_file).is_relative_to(PROJECT_ROOT), where

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env["IDP_ISSUER"] = base
    # The demo clients' back-channel logout URIs are on loopback (as `make run` sets it).
    env["IDP_OUTBOUND_ALLOW"] = "127.0.0.0/8 ::1"
    if database_url:
        env["DATABASE_URL"] = database_url
    idp = str(venv / "bin" / "idp")
    upgraded = json.loads(_run([idp, "db", "upgrade", "--json"], workdir, env).stdout)
    assert upgraded["revision"]
    seeded = json.loads(_run([idp, "demo", "seed", "--json"], workdir, env).stdout)
    assert seeded["accounts"] and seeded["clients"]
    assert Path(seeded["accounts_file"]).is_relative_to(workdir / "instance")
    # The state the defaults put in the working directory, not in the installed package.
    assert (workdir / "instance" / "secret_key").is_file()
    assert any((workdir / "keys").iterdir())
    site_packages = Path(where[0]).parent.parent
    assert not (site_packages / "instance").exists() and not (site_packages / "keys").exists()

    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([idp, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        wait_ready(proc, lambda: requests.get(f"{base}/readyz", timeout=2),
                   lambda: log.read_text(errors="replace")[-4000:], "idp serve", 60.0)
        login = requests.get(f"{base}/login", timeout=10)
        assert login.status_code == 200 and login.headers["Content-Type"].startswith(
            "text/html"), login.text[:500]
        assert 'name="username"' in login.text and 'name="password"' in login.text
        links = re.findall(r'<link rel="stylesheet" href="([^"]+)"', login.text)
        assert links, login.text[:1000]
        for href in links:
            css = requests.get(base + href, timeout=10)
            assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
        (app_css,) = [href for href in links if href.split("?")[0].endswith("/css/app.css")]
        assert requests.get(base + app_css, timeout=10).content == \
            (PROJECT_ROOT / "idp" / "static" / "css" / "app.css").read_bytes()

        discovery = requests.get(f"{base}/.well-known/openid-configuration", timeout=10)
        assert discovery.status_code == 200
        assert discovery.headers["Content-Type"].startswith("application/json")
        assert discovery.json()["issuer"] == base
        assert requests.get(f"{base}/openapi.json", timeout=10).json()["openapi"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
