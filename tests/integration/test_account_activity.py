"""/account/activity: the account's live sessions (each can be ended, back to this page) and
its recent sign-in events from the audit log."""

from __future__ import annotations

import re

from tests.helpers import csrf_from, login, make_user

AGENT = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"


def _browser(app, ip: str):
    http = app.test_client()
    http.environ_base.update({"REMOTE_ADDR": ip, "HTTP_USER_AGENT": AGENT})
    return http


def test_activity_needs_a_session(client):
    response = client.get("/account/activity")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/account/activity")


def test_activity_lists_sessions_and_sign_ins(ctx):
    make_user()
    other = make_user("np.lee", npi=None, role="nurse_practitioner")
    http = _browser(ctx, "10.1.2.3")
    assert login(http, password="wrong-password-1", mfa=False).status_code == 401
    assert login(http).status_code == 302
    stranger = _browser(ctx, "10.9.9.9")
    assert login(stranger, other.username).status_code == 302

    page = http.get("/account/activity")
    assert page.status_code == 200
    assert page.text.count('class="session"') == 1 and "(this session)" in page.text
    assert "End this session" in page.text and "Sign out everywhere" in page.text
    assert 'data-event="login.success"' in page.text
    assert 'data-event="login.failure"' in page.text
    assert "10.1.2.3" in page.text and AGENT in page.text
    assert "10.9.9.9" not in page.text  # another account's sign-ins are not shown
    assert "Account activity" in http.get("/account").text
    assert "/account/activity" in http.get("/account/settings").text


def test_ending_a_session_returns_to_activity_and_next_is_checked(ctx):
    make_user()
    here = _browser(ctx, "10.1.2.3")
    login(here)
    for _ in range(2):
        assert login(_browser(ctx, "10.1.2.4")).status_code == 302
    page = here.get("/account/activity")
    current = re.search(r'data-sid="([^"]+)" data-current="yes"', page.text).group(1)
    others = [s for s in re.findall(r'data-sid="([^"]+)"', page.text) if s != current]
    assert len(others) == 2
    token = csrf_from(page.text)
    done = here.post(f"/account/sessions/{others[0]}/end",
                     data={"csrf_token": token, "next": "/account/activity"})
    assert done.status_code == 302 and done.headers["Location"] == "/account/activity"
    assert "The session was ended." in here.get("/account/activity").text
    done = here.post(f"/account/sessions/{others[1]}/end",
                     data={"csrf_token": token, "next": "https://evil.example/x"})
    assert done.status_code == 302 and done.headers["Location"] == "/account"
    assert here.get("/account/activity").text.count('class="session"') == 1
