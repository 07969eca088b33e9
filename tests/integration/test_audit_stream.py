"""Audit streaming to a real rsyslog (TLS and plain TCP, octet-counted) and to a FHIR server:
every event of a sign-in arrives in order with a continuous seq and an unbroken hash chain; a
receiver down for a while loses nothing once it is back (at least once: a redelivered batch is
the only duplicate); the FHIR AuditEvents carry BALP's required elements."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from idp import create_app
from idp.audit.models import AuditEvent
from idp.auditstream import balp, service
from idp.auditstream.formats import DCM, IDP_EVENT_SYSTEM
from idp.auditstream.models import AuditStreamCursor
from idp.config import Settings
from idp.extensions import db
from tests.conftest import TEST_POLICY, ClosingClient
from tests.fhir_receiver import FhirReceiver
from tests.helpers import login, make_user
from tests.syslog_server import Rsyslog

IDP = str(Path(sys.executable).parent / "idp")
SD = re.compile(r'\[idpAudit@32473 seq="(\d+)" chain="(\d+)" pos="(\d+)" '
                r'hash="([0-9a-f]{64})" prev="([0-9a-f]{64})"')
FRAME = re.compile(r"^<(\d+)>1 \S+ \S+ idp - (\S+) ")


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory):
    server = Rsyslog(tmp_path_factory.mktemp("rsyslog")).start()
    yield server
    server.stop()


@pytest.fixture
def fhir():
    receiver = FhirReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def sink_env(env, rsyslog, fhir) -> dict[str, str]:
    return {**env,
            "IDP_AUDIT_SINK_SYSLOG_URL": f"tls://localhost:{rsyslog.tls_port}",
            "IDP_AUDIT_SINK_SYSLOG_CA": str(rsyslog.ca),
            "IDP_AUDIT_SINK_CEF_URL": f"tcp://127.0.0.1:{rsyslog.tcp_port}",
            "IDP_AUDIT_SINK_FHIR_URL": fhir.base}


@pytest.fixture
def stream_app(app, sink_env, rsyslog) -> Flask:
    """An IdP with the three sinks (the session's app has none); the files start empty."""
    for path in (rsyslog.tcp_file, rsyslog.tls_file):
        if path.exists():
            path.write_text("")
    application = create_app(Settings.from_env(sink_env), policy_overrides=TEST_POLICY)
    application.config["TESTING"] = True
    application.test_client_class = ClosingClient

    def _fresh_g() -> None:
        from flask import g

        g.__dict__.clear()

    application.before_request_funcs.setdefault(None, []).insert(0, _fresh_g)
    return application


def _head(application: Flask) -> int:
    """How many events the trail holds: what each receiver must have in the end."""
    with application.app_context():
        return db.session.execute(select(func.count(AuditEvent.seq))).scalar() or 0


def _sign_in(application: Flask) -> None:
    with application.app_context():
        from idp.accounts.models import User

        if db.session.execute(select(func.count(User.id))).scalar() == 0:
            make_user()
    http = application.test_client()
    assert login(http).status_code == 302


Position = tuple[int, int, int, str, str]   # seq, chain, position in the chain, hash, prev


def _chain(lines: list[str]) -> list[Position]:
    found = []
    for line in lines:
        match = SD.search(line)
        assert match, f"no chain position in {line[:120]!r}"
        seq, chain, pos, digest, prev = match.groups()
        found.append((int(seq), int(chain), int(pos), digest, prev))
    return found


def _assert_continuous(received: list[Position], head: int) -> None:
    """Per writer's chain: every position from 1, in order, each event's prev the hash of
    its chain's event before it; a repeat only as a batch sent again (at least once); all
    `head` events of the trail received."""
    first_seen: dict[tuple[int, int], str] = {}
    expected: dict[int, int] = {}
    for _seq, chain, pos, digest, _prev in received:
        if (chain, pos) in first_seen:
            assert first_seen[(chain, pos)] == digest, "a redelivered event changed"
            continue
        assert pos == expected.get(chain, 1), f"gap or disorder in chain {chain}: got {pos}"
        first_seen[(chain, pos)] = digest
        expected[chain] = pos + 1
    assert len(first_seen) == head
    for _seq, chain, pos, _digest, prev in received:
        if pos > 1:
            assert prev == first_seen[(chain, pos - 1)], f"{chain}:{pos} does not follow"


def test_sign_in_events_reach_rsyslog_in_order_over_tls_and_tcp(stream_app, rsyslog, fhir):
    _sign_in(stream_app)
    head = _head(stream_app)
    assert head >= 3
    tls = rsyslog.wait_for("tls", head)
    cef = rsyslog.wait_for("tcp", head)
    _assert_continuous(_chain(tls), head)
    _assert_continuous(_chain(cef), head)
    with stream_app.app_context():
        names = list(db.session.execute(select(AuditEvent.event).order_by(AuditEvent.seq))
                     .scalars())
    assert "login.success" in names
    # syslog: RFC 5424 with the event name as MSGID, the event as JSON after the SD
    for line, name in zip(tls, names, strict=True):
        frame = FRAME.match(line)
        assert frame and frame.group(2) == name[:32]
        body = json.loads(line[line.index("] ") + 2:])
        assert body["event"] == name and body["hash"] == SD.search(line).group(4)
    # CEF over the plain TCP input: one CEF line per event as the syslog MSG
    for line, name in zip(cef, names, strict=True):
        cef_part = line[line.index("] CEF:0|") + 2:]
        fields = cef_part.split("|")
        assert fields[:5] == ["CEF:0", "HealthIdP", "idp", "1.0", name]
        assert re.search(r"cn1Label=seq cn1=\d+ cn2Label=chain cn2=\d+ cn3Label=chainSeq "
                         r"cn3=\d+ cs1Label=hash cs1=[0-9a-f]{64}", cef_part)
    assert FRAME.match(tls[names.index("login.success")]).group(1) == str(10 * 8 + 6)
    # FHIR: one AuditEvent per event, in order, every one conforming
    with stream_app.app_context():
        seqs = list(db.session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq))
                    .scalars())
    assert len(seqs) == head
    assert [r["entity"][0]["what"]["identifier"]["value"] for r in fhir.resources] == \
        [str(s) for s in seqs]
    for resource in fhir.resources:
        assert balp.problems(resource) == []
    with stream_app.app_context():
        assert [s.lag for s in service.status()] == [0, 0, 0]


def test_receivers_down_for_a_while_lose_nothing(stream_app, rsyslog, fhir, frozen):
    _sign_in(stream_app)
    first = _head(stream_app)
    rsyslog.wait_for("tls", first)
    rsyslog.stop()
    fhir.stop()
    try:
        _sign_in(stream_app)     # recorded while every receiver is down
        _sign_in(stream_app)
        head = _head(stream_app)
        assert head > first
        with stream_app.app_context():
            down = {s.name: s for s in service.status()}
            assert all(s.lag == head - first and s.last_error for s in down.values())
            assert "cannot connect" in down["syslog"].last_error
            # backing off: an attempt now sends nothing and changes nothing
            assert service.deliver_due()["syslog"].attempted == 0
    finally:
        rsyslog.start()
        fhir.start()
    frozen.advance(3600)   # hours later, past any back-off
    with stream_app.app_context():
        reports = service.deliver_due()
        assert {n: r.failed for n, r in reports.items()} == {"syslog": 0, "cef": 0, "fhir": 0}
        assert [s.lag for s in service.status()] == [0, 0, 0]
        assert not any(s.last_error for s in service.status())
    _assert_continuous(_chain(rsyslog.wait_for("tls", head)), head)
    _assert_continuous(_chain(rsyslog.wait_for("tcp", head)), head)
    seqs = [int(r["entity"][0]["what"]["identifier"]["value"]) for r in fhir.resources]
    with stream_app.app_context():
        recorded = list(db.session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq))
                        .scalars())
    assert sorted(set(seqs)) == recorded and len(recorded) == head
    assert seqs == sorted(seqs)


def test_a_cursor_left_behind_redelivers_at_least_once(stream_app, rsyslog):
    """A node that died after sending and before moving the cursor: the batch is sent again,
    the receiver sees those seqs twice and nothing missing."""
    _sign_in(stream_app)
    head = _head(stream_app)
    rsyslog.wait_for("tls", head)
    with stream_app.app_context():
        first = db.session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars() \
            .first()
        assert first is not None and first.chain_seq == 1
        db.session.execute(AuditStreamCursor.__table__.update()
                           .where(AuditStreamCursor.sink == "syslog")
                           .values(last_seq=first.seq, positions={str(first.chain): 1}))
        db.session.commit()
        assert service.deliver_due()["syslog"].delivered == head - 1
    chain = _chain(rsyslog.wait_for("tls", 2 * head - 1))
    assert len(chain) == 2 * head - 1
    _assert_continuous(chain, head)


def test_login_failure_and_success_are_balp_user_authentication(stream_app, fhir):
    _sign_in(stream_app)
    http = stream_app.test_client()
    assert login(http, password="wrong-password-1A!", mfa=False).status_code == 401
    head = _head(stream_app)
    assert len(fhir.resources) == head
    by_event = {next(c["code"] for c in r["subtype"] if c["system"] == IDP_EVENT_SYSTEM): r
                for r in fhir.resources}
    ok, failed = by_event["login.success"], by_event["login.failure"]
    for resource in (ok, failed):
        assert resource["type"] == {"system": DCM, "code": "110114",
                                    "display": "User Authentication"}
        assert {"system": DCM, "code": "110122", "display": "Login"} in resource["subtype"]
        assert resource["action"] == "E"
        assert balp.problems(resource) == []
    assert ok["outcome"] == "0" and failed["outcome"] == "4" and failed["outcomeDesc"]
    user = next(a for a in ok["agent"] if a["requestor"])
    with stream_app.app_context():
        from idp.accounts.models import User

        subject = db.session.execute(select(User.subject)).scalar()
    assert user["who"]["identifier"]["value"] == subject
    assert ok["source"]["observer"] in [a["who"] for a in ok["agent"]]


def test_balp_checks_catch_what_the_profile_requires():
    """The checks fail a resource that lacks each required element (they are not vacuous)."""
    from datetime import UTC, datetime

    from idp.auditstream.formats import StreamedEvent, audit_event
    from idp.config import POLICY_DIR
    from idp.policy import load_policy

    rules = load_policy(POLICY_DIR).audit_stream
    item = StreamedEvent(7, datetime.now(UTC), "login.failure", 3, "sub-3", "drsmith",
                         "client-1", "192.0.2.1", "user:3", {"reason": "bad_password"},
                         "a" * 64, "b" * 64)
    good = audit_event(item, rules, "https://idp.example")
    assert balp.problems(good) == []
    breakers = {
        "type": lambda r: r.pop("type"),
        "recorded": lambda r: r.update(recorded="2026-12-06T10:00:00"),
        "outcome": lambda r: r.pop("outcome"),
        "outcomeDesc": lambda r: r.pop("outcomeDesc"),
        "source.observer": lambda r: r["source"].pop("observer"),
        "requestor": lambda r: r["agent"][0].pop("requestor"),
        "val-audit-source": lambda r: r["agent"].pop(1),
        "network": lambda r: r["agent"][2].pop("network"),
        "agent[user]": lambda r: r["agent"].pop(0),
        "subtype": lambda r: r.pop("subtype"),
    }
    for name, breaker in breakers.items():
        broken = json.loads(json.dumps(good))
        breaker(broken)
        assert balp.problems(broken), f"missing {name} passed the checks"


def test_stream_status_command_shows_lag_per_sink(stream_app, sink_env, rsyslog, fhir):
    _sign_in(stream_app)
    head = _head(stream_app)
    rsyslog.wait_for("tls", head)
    fhir.stop()
    _sign_in(stream_app)
    result = subprocess.run([IDP, "audit", "stream", "status", "--json"],
                            env={**os.environ, **sink_env}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1, result.stderr   # the FHIR sink is failing
    rows = {row["sink"]: row for row in json.loads(result.stdout)}
    now = _head(stream_app)
    assert rows["syslog"]["lag"] == 0 and rows["cef"]["lag"] == 0
    assert rows["fhir"]["lag"] == now - head and rows["fhir"]["last_error"]
    assert rows["fhir"]["target"] == f"http://127.0.0.1:{fhir.port}"


def test_a_misconfigured_sink_refuses_to_start(env):
    from idp.auditstream.service import SinkMisconfigured

    with pytest.raises(SinkMisconfigured, match="IDP_AUDIT_SINK_SYSLOG_URL"):
        create_app(Settings.from_env({**env, "IDP_AUDIT_SINK_SYSLOG_URL": "http://x:1"}),
                   policy_overrides=TEST_POLICY)


def test_stream_switched_off_in_policy_sends_nothing(app, sink_env, rsyslog, fhir):
    off = create_app(Settings.from_env(sink_env),
                     policy_overrides={**TEST_POLICY, "audit_stream": {"enabled": False}})
    off.config["TESTING"] = True
    off.test_client_class = ClosingClient
    for path in (rsyslog.tcp_file, rsyslog.tls_file):
        path.write_text("")
    _sign_in(off)
    assert _head(off) >= 3
    with off.app_context():
        assert service.deliver_due() == {}
        assert db.session.execute(select(func.count(AuditStreamCursor.id))).scalar() == 0
    assert rsyslog.lines("tls") == [] and rsyslog.lines("tcp") == [] and fhir.resources == []
