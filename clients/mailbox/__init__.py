"""The development mailbox: an SMTP sink (aiosmtpd) that keeps every mail it receives as a file,
and a small web inbox to list them, read them (text and HTML parts) and follow their links.

`python -m clients.mailbox` (started by `make run`): MAILBOX_SMTP_PORT (2525) for the IdP's
SMTP_PORT, MAILBOX_PORT (8025) for the web inbox, MAILBOX_DIR where mails are kept. It never
relays anything: a mail sent to it reaches nobody but the developer's browser.
"""

from __future__ import annotations
