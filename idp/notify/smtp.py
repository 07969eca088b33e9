"""One SMTP attempt: the mail server of the environment (SMTP_*), STARTTLS and login when a
user is set. The mailer and the outbox's retries both send through it."""

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
