"""`python -m clients.mailbox`: the SMTP sink and the web inbox in one process."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from werkzeug.serving import make_server

from clients.mailbox import smtp
from clients.mailbox.store import Store
from clients.mailbox.web import create_app

HOST = "127.0.0.1"


def main() -> int:
    directory = Path(os.environ.get("MAILBOX_DIR", "instance/mailbox"))
    smtp_port = int(os.environ.get("MAILBOX_SMTP_PORT", "2525"))
    web_port = int(os.environ.get("MAILBOX_PORT", "8025"))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per page view
    store = Store(directory)
    controller = smtp.start(store, HOST, smtp_port)
    server = make_server(HOST, web_port, create_app(directory), threaded=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
