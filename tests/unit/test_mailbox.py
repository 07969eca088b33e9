"""The dev mailbox (clients/mailbox): what its SMTP side receives, its web inbox lists and shows
(text and HTML parts, the links), and what it refuses."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest

from clients.mailbox import smtp
from clients.mailbox.store import Store
from clients.mailbox.web import create_app
from tests.conftest import free_port


@pytest.fixture
def sink(tmp_path):
    store = Store(tmp_path / "mail")
    port = free_port()
    controller = smtp.start(store, "127.0.0.1", port)
    yield store, port
    controller.stop()


def _send(port: int, to: str, subject: str, text: str, html: str | None = None) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "IdP <no-reply@localhost>", to, subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(message)


def test_a_mail_sent_over_smtp_is_listed_and_readable_with_its_links(sink):
    store, port = sink
    _send(port, "a@hospital.example", "Reset your password",
          "Open http://localhost:8000/password/reset/abc123.\n")
    _send(port, "b@hospital.example", "Welcome", "Plain part", "<p>Hi <a href="
          "\"http://localhost:8001/\">portal</a><script>alert(1)</script></p>")
    web = create_app(store.directory).test_client()

    listing = web.get("/").get_data(as_text=True)
    assert listing.index("Welcome") < listing.index("Reset your password")  # newest first
    only_a = web.get("/?to=a@hospital").get_data(as_text=True)
    assert "Reset your password" in only_a and "Welcome" not in only_a

    reset = next(m for m in store.all() if m.subject == "Reset your password")
    page = web.get(f"/mail/{reset.id}").get_data(as_text=True)
    assert '<a href="http://localhost:8000/password/reset/abc123">' in page  # no trailing "."
    assert 'id="text"' in page and "<iframe" not in page

    welcome = next(m for m in store.all() if m.subject == "Welcome")
    page = web.get(f"/mail/{welcome.id}").get_data(as_text=True)
    assert "<iframe" in page and "sandbox" in page and 'href="http://localhost:8001/"' in page
    part = web.get(f"/mail/{welcome.id}/html")
    assert part.status_code == 200 and "<script>" in part.get_data(as_text=True)
    assert part.headers["Content-Security-Policy"].startswith("sandbox;")  # no script runs
    assert web.get(f"/mail/{reset.id}/html").status_code == 404  # it has no HTML part


@pytest.mark.parametrize("mail_id", ["../../etc/passwd", "..%2f..%2fx", "x" * 300,
                                     "0000000000000000000-00000000"])
def test_unknown_or_crafted_mail_ids_are_not_found(tmp_path, mail_id):
    web = create_app(tmp_path / "mail").test_client()
    response = web.get(f"/mail/{mail_id}")
    assert response.status_code == 404 and "No such mail" in response.get_data(as_text=True)


def test_delete_all_empties_the_inbox(sink):
    store, port = sink
    _send(port, "a@hospital.example", "One", "text")
    web = create_app(store.directory).test_client()
    assert web.post("/clear").status_code == 303
    assert store.all() == [] and 'id="empty"' in web.get("/").get_data(as_text=True)
