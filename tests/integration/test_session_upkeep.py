"""Explicit transactions around the SSO session (issue 19): reading the session
(idp.sessions.service.current) writes and commits nothing; what it finds owed (ending an
expired session, refreshing last_seen at most every policies/session.toml `touch_every`) is done
by `settle`, an after_request step with a commit of its own. And the one "after the response"
helper (idp.core.after_response): jobs run once the response is closed, each in a fresh
application context, a failing one logged without stopping the others."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Response, g
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from idp.accounts.models import User
from idp.context import policy
from idp.core.after_response import run_after_response
from idp.extensions import db
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession
from tests.helpers import login, make_user


@contextmanager
def commits() -> Iterator[list[object]]:
    """Every commit of any ORM session while the block runs."""
    seen: list[object] = []

    def on_commit(session: Session) -> None:
        seen.append(session)

    event.listen(Session, "after_commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(Session, "after_commit", on_commit)


def _stored(sid: str) -> tuple:
    """The row as committed (a connection of its own: nothing uncommitted shows)."""
    with db.engine.connect() as conn:
        return conn.execute(select(SsoSession.ended_at, SsoSession.end_reason,
                                   SsoSession.last_seen_at).where(SsoSession.id == sid)).one()


@pytest.fixture
def browser(ctx, client):
    make_user()
    assert login(client).status_code == 302
    cookie = client.get_cookie(sessions.cookie_name()).value
    sid = db.session.execute(select(SsoSession.id)).scalar_one()
    db.session.commit()
    return cookie, sid


@contextmanager
def _request(app, cookie: str) -> Iterator[None]:
    """A request of this browser, without the hooks (the test calls the steps itself)."""
    with app.test_request_context("/account", headers={
            "Cookie": f"{sessions.cookie_name()}={cookie}"}):
        g.__dict__.clear()  # as at the start of every request (tests/conftest.py)
        yield


@pytest.mark.parametrize("after", ["idle", "touch"])
def test_reading_the_session_commits_nothing_settle_does_the_upkeep(ctx, browser, frozen,
                                                                    after):
    cookie, sid = browser
    rules = policy().session
    seen_before = _stored(sid).last_seen_at
    frozen.advance(rules.idle_timeout + 1 if after == "idle" else rules.touch_every + 1)
    with _request(ctx, cookie):
        with commits() as done:
            found = sessions.current()
        assert done == []
        assert _stored(sid).ended_at is None and _stored(sid).last_seen_at == seen_before
        if after == "idle":
            assert found is None and g.sso_cookie is None  # counts as none from here on
        else:
            assert found is not None and found.id == sid
        sessions.settle(Response())
    ended_at, reason, last_seen = _stored(sid)
    if after == "idle":
        assert ended_at is not None and reason == "idle"
    else:
        assert ended_at is None and last_seen > seen_before


def test_last_seen_is_written_at_most_every_touch_every(ctx, client, browser, frozen):
    cookie, sid = browser
    first = _stored(sid).last_seen_at
    frozen.advance(policy().session.touch_every - 1)
    with commits() as done:
        assert client.get("/account").status_code == 200
    assert _stored(sid).last_seen_at == first and done == []  # a page view: no write at all
    frozen.advance(2)
    assert client.get("/account").status_code == 200
    assert _stored(sid).last_seen_at > first


def test_a_disabled_account_s_session_is_ended_on_sight(ctx, client, browser):
    cookie, sid = browser
    db.session.execute(update(User).values(disabled=True))
    db.session.commit()
    page = client.get("/account")
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    ended_at, reason, _ = _stored(sid)
    assert ended_at is not None and reason == "disabled"


def test_jobs_run_after_the_response_in_a_context_of_their_own(ctx, caplog):
    ran: list[str] = []

    def failing() -> None:
        raise RuntimeError("boom")

    def second() -> None:
        ran.append("second" if "marker" not in g else "shared g")

    with ctx.test_request_context("/"):
        g.marker = True
        run_after_response(lambda: ran.append("first"))
        run_after_response(failing)
        run_after_response(second)
        response = ctx.process_response(Response("ok"))
        assert ran == []  # the response is made, not yet sent
    with caplog.at_level(logging.ERROR, logger="idp.after_response"):
        response.close()  # the server has sent it
    assert ran == ["first", "second"]
    assert "work after the response failed" in caplog.text


def test_outside_a_request_a_job_runs_at_once(ctx):
    ran: list[int] = []
    run_after_response(lambda: ran.append(1))
    assert ran == [1]
