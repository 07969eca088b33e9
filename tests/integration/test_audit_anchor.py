"""Audit anchors: `idp audit anchor` prints (and writes) the latest event's seq and hash;
`idp audit verify --anchor FILE` fails, naming the event, when that event was changed or
removed, even where the chain alone would look intact (the whole trail re-hashed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from idp import clock
from idp.audit import service as audit
from idp.audit.models import AuditEvent, AuditHead
from idp.extensions import db

IDP = str(Path(sys.executable).parent / "idp")


@pytest.fixture
def run(env, app):
    def _run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([IDP, *args], env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=60)
    return _run


def _events(count: int) -> None:
    for index in range(count):
        audit.record("test.event", actor="test", n=index)
    db.session.commit()


def test_anchor_prints_and_writes_the_latest_event(run, ctx, tmp_path):
    assert run("audit", "anchor").returncode == 1  # nothing to anchor yet
    _events(3)
    last = db.session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc())).scalars() \
        .first()
    out = tmp_path / "anchor.json"
    done = run("audit", "anchor", "--json", "--output", str(out))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["seq"] == last.seq and printed["hash"] == last.hash
    assert printed["chains"] == {str(last.chain): [3, last.hash]}  # every chain's head
    assert printed["at"].startswith(last.at.strftime("%Y-%m-%d"))
    text = run("audit", "anchor")
    assert text.returncode == 0 and f"seq {last.seq}  hash {last.hash}" in text.stdout


def test_verify_with_an_anchor(run, ctx, tmp_path):
    _events(3)
    out = tmp_path / "anchor.json"
    assert run("audit", "anchor", "--output", str(out)).returncode == 0
    anchored = json.loads(out.read_text())["seq"]
    _events(2)  # the trail grows after the anchor: still fine
    ok = run("audit", "verify", "--anchor", str(out), "--json")
    assert ok.returncode == 0, ok.stdout
    assert json.loads(ok.stdout)["anchor"] == {"seq": anchored, "matches": True,
                                               "problem": None}


def test_a_rewritten_trail_passes_the_chain_but_not_the_anchor(run, ctx, tmp_path):
    """Someone with write access edits event 2 and re-hashes everything after it: the chain
    is consistent again, only the anchor kept elsewhere shows it."""
    _events(4)
    out = tmp_path / "anchor.json"
    assert run("audit", "anchor", "--output", str(out)).returncode == 0
    rows = db.session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
    assert len({row.chain for row in rows}) == 1  # one writer: one chain
    prev = rows[0].hash
    for row in rows[1:]:
        detail = {"n": 99} if row.chain_seq == 2 else row.detail
        digest = audit._hash(prev, row.chain_seq, clock.aware(row.at).isoformat(), row.event,
                             row.user_id, row.client_id, row.ip, row.actor, row.user_agent,
                             detail, row.anchors)
        db.session.execute(update(AuditEvent).where(AuditEvent.seq == row.seq).values(
            detail=detail, prev_hash=prev, hash=digest))
        prev = digest
    db.session.execute(update(AuditHead).values(last_hash=prev))
    db.session.commit()
    assert run("audit", "verify").returncode == 0  # the chain alone cannot tell
    bad = run("audit", "verify", "--anchor", str(out))
    assert bad.returncode == 1
    assert f"anchor MISMATCH: anchored event {rows[-1].seq} has hash" in bad.stdout


def test_a_removed_anchored_event_is_named(run, ctx, tmp_path):
    _events(3)
    out = tmp_path / "anchor.json"
    assert run("audit", "anchor", "--output", str(out)).returncode == 0
    rows = db.session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
    db.session.execute(delete(AuditEvent).where(AuditEvent.seq == rows[2].seq))
    db.session.execute(update(AuditHead).values(seq=2, last_hash=rows[1].hash))
    db.session.commit()
    assert run("audit", "verify").returncode == 0  # a truncated chain is still a chain
    bad = run("audit", "verify", "--anchor", str(out), "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["anchor"]["problem"] == f"anchored event {rows[2].seq} is missing"


def test_an_unreadable_anchor_is_refused(run, ctx, tmp_path):
    _events(1)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    done = run("audit", "verify", "--anchor", str(garbage))
    assert done.returncode == 2 and "cannot read the anchor" in done.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"seq": "x"}')
    done = run("audit", "verify", "--anchor", str(wrong))
    assert done.returncode == 1 and "needs an integer seq" in done.stdout
