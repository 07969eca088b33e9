"""WSGI entry point: `gunicorn idp.wsgi:app`; idp.asgi serves it under granian (`idp serve`)."""

import sys

from idp import create_app
from idp.config import ConfigError
from idp.core import request_log
from idp.policy import PolicyError

try:
    app = create_app()
except (ConfigError, PolicyError) as exc:
    # One line, no traceback; exit code 3 tells gunicorn's master the worker cannot boot.
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)
request_log.configure(app.extensions["idp"].settings.log_format)
