"""Email over real SMTP. A failed send is logged (without its content) and reported as False:
a mail outage must not turn a sign-in into an error page."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from idp.context import settings

log = logging.getLogger("idp.notify")


def send_mail(to: str, subject: str, body: str) -> bool:
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
        return False
    return True


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
