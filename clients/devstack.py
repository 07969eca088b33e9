"""`python -m clients.devstack` (`make run`): the IdP, the provider portal, the EHR and a dev
mailbox, locally, on http://localhost (a WebAuthn RP ID: passkeys work as they do in production).

Applies migrations, seeds the demo clients and accounts (`idp demo seed`), starts the IdP as
deployed by default (`idp serve`: granian on idp.asgi) and the demo apps under gunicorn as child
processes, waits until each answers, prints the URLs and the demo sign-in credentials
(password, and the key of the authenticator app each login asks a code of),
runs the IdP's cron jobs (`idp sessions expire`, `idp sessions deliver`) every minute, and stops
every child on Ctrl-C or SIGTERM.

Environment: IDP_PORT (8000), PORTAL_PORT (8001), EHR_PORT (8002), SMART_APP_PORT (8003, the
demo SMART app), MAILBOX_PORT (8025, the web inbox) and MAILBOX_SMTP_PORT (2525, where the IdP
sends its mail unless SMTP_HOST is set); IDP_ISSUER and EHR_AUDIENCE default to
http://localhost:<port>; every other IdP variable (DATABASE_URL, IDP_INSTANCE_DIR, IDP_KEYS_DIR,
...) passes through unchanged. The servers listen on 127.0.0.1 only; each app's cookies have a
name of their own (cookies do not tell ports apart).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # where the servers listen
PUBLIC = "localhost"  # what the browser opens: a host name, as WebAuthn needs
START_TIMEOUT = 60.0
# The IdP's settings (database credentials, SMTP password, ...) stay out of the RPs' environment.
IDP_ONLY = ("IDP_", "DATABASE_URL", "REDIS_URL", "SMTP_", "SMS_")
LOOPBACK_ALLOW = "127.0.0.0/8 ::1"  # IDP_OUTBOUND_ALLOW for the RPs on this host
STOP_TIMEOUT = 25.0
SMART_APP_CLIENT_ID = "smart-app"  # idp.demo.SMART_APP_CLIENT_ID
JOBS_EVERY = 60.0  # seconds between runs of `idp sessions expire` and `idp sessions deliver`


class StackError(Exception):
    """The stack cannot start; the message says which step failed."""


@dataclass
class Child:
    name: str
    url: str          # what people open (the IdP's issuer)
    port: int         # where it listens on 127.0.0.1
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None

    @property
    def local(self) -> str:
        return f"http://{HOST}:{self.port}"


def _port(env: dict[str, str], name: str, default: int) -> int:
    value = env.get(name, str(default))
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise StackError(f"{name}={value!r} is not a port number")
    return int(value)


def _idp_command() -> list[str]:
    script = Path(sys.executable).parent / "idp"  # the console script of this virtualenv
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from idp.cli import main; main()"]


def _run_idp(args: list[str], env: dict[str, str]) -> dict:
    """Run one `idp ... --json` step; its JSON output, or StackError with its message."""
    step = f"`idp {' '.join(args)}`"
    try:
        result = subprocess.run([*_idp_command(), *args, "--json"], env=env, cwd=PROJECT_ROOT,
                                capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise StackError(f"{step} did not finish in 300 s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise StackError(f"{step} failed: {detail[-1] if detail else '?'}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise StackError(f"{step} printed no JSON: {result.stdout[-300:]!r}") from None


def _gunicorn(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--bind", f"{HOST}:{port}", "--workers", "2",
            "--threads", "4", "--timeout", "30", "--graceful-timeout", "10",
            "--no-control-socket", app]


def plan(env: dict[str, str]) -> tuple[dict[str, str], list[Child]]:
    """The IdP's environment and the three children, ports and URLs resolved."""
    idp_port = _port(env, "IDP_PORT", 8000)
    portal_port = _port(env, "PORTAL_PORT", 8001)
    ehr_port = _port(env, "EHR_PORT", 8002)
    smart_port = _port(env, "SMART_APP_PORT", 8003)
    mailbox_port = _port(env, "MAILBOX_PORT", 8025)
    mailbox_smtp_port = _port(env, "MAILBOX_SMTP_PORT", 2525)
    portal_url, ehr_url = f"http://{PUBLIC}:{portal_port}", f"http://{PUBLIC}:{ehr_port}"
    smart_url = f"http://{PUBLIC}:{smart_port}"
    mailbox_url = f"http://{PUBLIC}:{mailbox_port}"
    # The IdP mails the dev mailbox unless the developer named a mail server of their own.
    mail = {} if env.get("SMTP_HOST") else {
        "SMTP_HOST": HOST, "SMTP_PORT": str(mailbox_smtp_port),
        "SMTP_FROM": env.get("SMTP_FROM", "Provider Identity <no-reply@localhost>")}
    # Each app sees its own settings and secrets only.
    idp_env = {**_without(env, ("PORTAL_", "EHR_CLIENT_", "EHR_SECRET_", "SMART_APP_SECRET")),
               **mail,
               "IDP_ISSUER": env.get("IDP_ISSUER", f"http://{PUBLIC}:{idp_port}"),
               "EHR_AUDIENCE": env.get("EHR_AUDIENCE", ehr_url),
               "PORTAL_URL": portal_url, "EHR_URL": ehr_url,  # for `idp demo seed`
               "SMART_APP_URL": smart_url,
               # The portal and the EHR receive back-channel logout on loopback: allow-list it
               # for the IdP's outbound calls (idp/core/outbound.py), beside the operator's own.
               "IDP_OUTBOUND_ALLOW": " ".join(filter(None, (LOOPBACK_ALLOW,
                                                            env.get("IDP_OUTBOUND_ALLOW"))))}
    portal_env = _without(env, (*IDP_ONLY, "EHR_CLIENT_", "EHR_SECRET_", "EHR_STATE_",
                                "PORTAL_"))
    ehr_env = _without(env, (*IDP_ONLY, "PORTAL_", "EHR_", "SMART_APP_"))
    smart_env = _without(env, (*IDP_ONLY, "PORTAL_", "EHR_", "SMART_APP_"))
    mailbox_env = {**_without(env, (*IDP_ONLY, "PORTAL_", "EHR_", "SMART_APP_", "MAILBOX_")),
                   "MAILBOX_PORT": str(mailbox_port),
                   "MAILBOX_SMTP_PORT": str(mailbox_smtp_port),
                   "MAILBOX_DIR": env.get("MAILBOX_DIR") or str(
                       Path(env.get("IDP_INSTANCE_DIR") or PROJECT_ROOT / "instance")
                       / "mailbox")}
    # The RPs' back-channel logout records (small SQLite files) live in the instance dir.
    state_dir = env.get("IDP_INSTANCE_DIR") or str(PROJECT_ROOT / "instance")
    children = [
        # First: the IdP's first mails (none at start, but a retry job may run) find it up.
        Child("Mail", mailbox_url, mailbox_port, [sys.executable, "-m", "clients.mailbox"],
              mailbox_env),
        Child("IdP", idp_env["IDP_ISSUER"], idp_port,
              [*_idp_command(), "serve", "--bind", f"{HOST}:{idp_port}"], idp_env),
        Child("Portal", portal_url, portal_port,
              _gunicorn("clients.portal:create_app()", portal_port),
              {**portal_env, "IDP_ISSUER": idp_env["IDP_ISSUER"], "PORTAL_URL": portal_url,
               "EHR_API": env.get("EHR_API", ehr_url), "PORTAL_STATE_DIR": state_dir}),
        Child("EHR", ehr_url, ehr_port, _gunicorn("clients.ehr:create_app()", ehr_port),
              {**ehr_env, "IDP_ISSUER": idp_env["IDP_ISSUER"], "EHR_URL": ehr_url,
               "EHR_AUDIENCE": idp_env["EHR_AUDIENCE"], "EHR_STATE_DIR": state_dir,
               "EHR_SMART_APP_CLIENT_ID": SMART_APP_CLIENT_ID,
               "EHR_SMART_APP_LAUNCH_URL": f"{smart_url}/launch"}),
        # The demo third-party SMART app: a public client, launched from the EHR.
        Child("SMART", smart_url, smart_port,
              _gunicorn("clients.smart_app:create_app()", smart_port),
              {**smart_env, "IDP_ISSUER": idp_env["IDP_ISSUER"], "SMART_APP_URL": smart_url,
               "SMART_APP_CLIENT_ID": SMART_APP_CLIENT_ID,
               "SMART_APP_FHIR_BASE": f"{ehr_url}/fhir",
               "SMART_APP_SECRET_KEY": env.get("SMART_APP_SECRET_KEY")
               or secrets.token_urlsafe(32)}),
    ]
    return idp_env, children


def _without(env: dict[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(prefixes)}


def _prepare(env: dict[str, str], children: list[Child]) -> None:
    """Fail early on a busy port (a server already there would answer our health checks), and
    create the instance dir (the default SQLite database lives there)."""
    for child in children:
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((HOST, child.port)) == 0:
                name = {"IdP": "IDP_PORT", "Portal": "PORTAL_PORT", "EHR": "EHR_PORT",
                        "SMART": "SMART_APP_PORT", "Mail": "MAILBOX_PORT"}
                raise StackError(f"{child.local} is in use already: stop what runs there or "
                                 f"choose another port with {name[child.name]}=...")
    mailbox = next((c for c in children if c.name == "Mail"), None)
    if mailbox is not None:
        smtp_port = int(mailbox.env["MAILBOX_SMTP_PORT"])
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((HOST, smtp_port)) == 0:
                raise StackError(f"port {smtp_port} (the dev mailbox's SMTP) is in use already: "
                                 "choose another with MAILBOX_SMTP_PORT=...")
    instance = Path(env.get("IDP_INSTANCE_DIR", PROJECT_ROOT / "instance"))
    instance.mkdir(mode=0o700, parents=True, exist_ok=True)


def _client_secrets(seeded: dict) -> dict[str, str]:
    with open(seeded["clients_file"]) as handle:
        saved = json.load(handle)
    return {client_id: entry["client_secret"] for client_id, entry in saved.items()}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(children: list[Child]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(children)
    while pending:
        for child in list(pending):
            assert child.process is not None
            if child.process.poll() is not None:
                raise StackError(f"{child.name} exited with status {child.process.returncode}")
            if _answers(child.local):
                pending.remove(child)
        if pending and time.monotonic() > deadline:
            raise StackError(f"{', '.join(c.name for c in pending)} did not answer in "
                             f"{START_TIMEOUT:.0f} s")
        if pending:
            time.sleep(0.3)


def _stop(children: list[Child]) -> None:
    running = [c for c in children if c.process and c.process.poll() is None]
    for child in running:
        child.process.terminate()  # gunicorn: graceful shutdown
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in running:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


ROLE_NAMES = {"physician": "Physician", "nurse_practitioner": "Nurse practitioner",
              "admin_staff": "Administrative staff", "admin": "IdP administrator"}


def _banner(children: list[Child], seeded: dict, idp_env: dict[str, str]) -> str:
    """What a developer needs in the first ten minutes: where everything is, who to sign in as,
    where mails and SMS codes arrive."""
    named = {c.name: c for c in children}
    idp = named["IdP"].url
    lines = ["", "Provider Identity development stack is up:"]
    lines += [f"  {c.name:7} {c.url}" for c in children]
    lines.append(f"  Admin   {idp}/admin/  (sign in as idp.admin)")
    if "Mail" in named:
        lines.append(f"Mails (password reset, registration, approval, lock notices, email "
                     f"codes): the dev mailbox {named['Mail'].url}")
    else:
        lines.append(f"Mails go to {idp_env.get('SMTP_HOST')}:{idp_env.get('SMTP_PORT', '25')}")
    lines.append(f"SMS codes: nothing is texted; they wait in {idp}/admin/sms-outbox "
                 "(as idp.admin)")
    lines.append("Demo sign-in (local demo credentials, also in "
                 f"{seeded['accounts_file']}):")
    lines.append("  sign in with the username or the NPI; every sign-in also asks for the code "
                 "of an authenticator app: add the account's key, or its otpauth:// link, to one")
    for account in seeded["accounts"]:
        role = ROLE_NAMES.get(account["role"], account["role"])
        npi = f"NPI {account['npi']}" if account.get("npi") else "no NPI"
        lines.append(f"  {account['username']:13} {account['role']:19} {account['password']}")
        lines.append(f"  {'':13} {account.get('name', '')}, {role}, {npi}")
        lines.append(f"  {'':13} authenticator key {account['totp_secret']}")
        lines.append(f"  {'':13} {account['totp_uri']}")
    lines.append(f"Try: a passkey at {idp}/mfa/enroll/webauthn (localhost is a valid WebAuthn "
                 "RP ID), \u201cForgot password?\u201d and \u201cNew Provider Registration\u201d "
                 "on the sign-in page (approve the application at /admin/verifications).")
    lines.append("SMART app: in the EHR press \u201cLaunch app\u201d beside a patient (EHR "
                 "launch), or open the SMART app and choose a patient (standalone launch).")
    lines += ["Open the portal, sign in as a demo account. Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def _cron(idp_env: dict[str, str]) -> None:
    """What cron does in production: end idle sessions (their relying parties are told over the
    back-channel), retry back-channel logout deliveries and queued mails that failed, stream
    the audit trail to its sinks, end break-glass entitlements and escalate overdue reviews."""
    for job in (["sessions", "expire"], ["sessions", "deliver"], ["notify", "deliver"],
                ["audit", "stream", "deliver"], ["breakglass", "sweep"]):
        try:
            _run_idp(job, idp_env)
        except StackError as exc:
            print(f"warning: {exc}", file=sys.stderr, flush=True)


def _resolve_practitioners(idp_env: dict[str, str]) -> None:
    """fhirUser: what the nightly job does, once the EHR's FHIR server answers."""
    try:
        _run_idp(["smart", "resolve-practitioners"], idp_env)
    except StackError as exc:
        print(f"warning: {exc}", file=sys.stderr, flush=True)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    children: list[Child] = []
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(signum, _on_signal)
    try:
        idp_env, children = plan(env)
        _prepare(env, children)
        print("Applying database migrations ...", flush=True)
        _run_idp(["db", "upgrade"], idp_env)
        print("Seeding demo clients and accounts ...", flush=True)
        seeded = _run_idp(["demo", "seed"], idp_env)
        client_secrets = _client_secrets(seeded)
        named = {c.name: c for c in children}
        for child, client_id in ((named["Portal"], "portal"), (named["EHR"], "ehr")):
            prefix = client_id.upper()
            child.env[f"{prefix}_CLIENT_ID"] = client_id
            child.env[f"{prefix}_CLIENT_SECRET"] = client_secrets[client_id]
            child.env[f"{prefix}_SECRET_KEY"] = (env.get(f"{prefix}_SECRET_KEY")
                                                 or secrets.token_urlsafe(32))
        for child in children:
            print(f"Starting {child.name} on {child.url} ...", flush=True)
            # Own process group: Ctrl-C reaches only this launcher, which then stops each
            # gunicorn with one SIGTERM (a worker hit by the terminal's SIGINT and its master's
            # signals at once can hang until the graceful timeout kills it).
            child.process = subprocess.Popen(child.argv, env=child.env, cwd=PROJECT_ROOT,
                                             process_group=0)
        _wait_ready(children)
        _resolve_practitioners(idp_env)
        print(_banner(children, seeded, idp_env), flush=True)
        next_jobs = time.monotonic() + JOBS_EVERY
        while all(c.process.poll() is None for c in children):
            time.sleep(0.5)
            if time.monotonic() >= next_jobs:
                _cron(idp_env)
                next_jobs = time.monotonic() + JOBS_EVERY
        dead = next(c for c in children if c.process.poll() is not None)
        raise StackError(f"{dead.name} exited with status {dead.process.returncode}")
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second one must not cut cleanup
            signal.signal(signum, signal.SIG_IGN)
        _stop(children)


if __name__ == "__main__":
    sys.exit(run())
