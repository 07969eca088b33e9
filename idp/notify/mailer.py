"""Email over real SMTP. A failed send is logged (without its content) and kept in the outbox
for retries (idp/notify/outbox.py): a mail outage must not turn a sign-in into an error page,
and must not lose the mail."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from idp.context import settings

log = logging.getLogger("idp.notify")


def smtp_send(to: str, subject: str, body: str) -> str | None:
    """One SMTP attempt: None when the server accepted the mail, else a short error."""
    conf = settings()
    message = EmailMessage()
    message["From"] = conf.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    try:
        with smtplib.SMTP(conf.smtp_host, conf.smtp_port, timeout=10) as smtp:
            if conf.smtp_user:
                smtp.starttls()
                smtp.login(conf.smtp_user, conf.smtp_password or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("mail to one recipient failed: %s", type(exc).__name__)
        return type(exc).__name__
    return None


def send_mail(to: str, subject: str, body: str, *, queue: bool = True) -> bool:
    """Send now; True when the server accepted it. A failed mail is kept for retries unless
    `queue` is False (sign-in codes: they expire in minutes, the page offers another way)."""
    error = smtp_send(to, subject, body)
    if error is None:
        return True
    if queue:
        from idp.notify import outbox

        outbox.keep_failed(to, subject, body, error)
    return False


def send_after_response(to: str, subject: str, body: str) -> None:
    """Send once the response has gone out, so how long the mail server takes cannot tell a
    caller whether an account exists (the forgot-password page answers in constant time)."""
    from flask import after_this_request, current_app

    app = current_app._get_current_object()

    @after_this_request
    def _defer(response):  # noqa: ANN001, ANN202
        def _send() -> None:
            with app.app_context():
                send_mail(to, subject, body)

        response.call_on_close(_send)
        return response
