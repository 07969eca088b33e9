"""Email over real SMTP. A failed send is logged (without its content) and kept in the outbox
for retries (idp/notify/outbox.py): a mail outage must not turn a sign-in into an error page,
and must not lose the mail."""

from __future__ import annotations

from idp.core.after_response import run_after_response
from idp.notify import outbox
from idp.notify.smtp import smtp_send

__all__ = ["send_after_response", "send_mail", "smtp_send"]


def send_mail(to: str, subject: str, body: str, *, queue: bool = True) -> bool:
    """Send now; True when the server accepted it. A failed mail is kept for retries unless
    `queue` is False (sign-in codes: they expire in minutes, the page offers another way)."""
    error = smtp_send(to, subject, body)
    if error is None:
        return True
    if queue:
        outbox.keep_failed(to, subject, body, error)
    return False


def send_after_response(to: str, subject: str, body: str) -> None:
    """Send once the response has gone out, so how long the mail server takes cannot tell a
    caller whether an account exists (the forgot-password page answers in constant time)."""
    run_after_response(lambda: send_mail(to, subject, body))
