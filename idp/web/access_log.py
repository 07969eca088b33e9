"""gunicorn access log that never records a secret: the query string is left out by the
format (it can carry id_token_hint), and one-time links keep only their route."""

from __future__ import annotations

import re

from gunicorn.glogging import Logger

SECRET_PATHS = re.compile(r"^(/password/reset/|/account/email/verify/)[^/?]+")


def redact(path: str) -> str:
    return SECRET_PATHS.sub(r"\1[redacted]", path)


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):  # noqa: ANN001, ANN201
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("U", "r", "q"):
            if key in atoms and isinstance(atoms[key], str):
                atoms[key] = redact(atoms[key]) if key != "q" else ""
        if "r" in atoms:
            atoms["r"] = atoms["r"].split("?", 1)[0]
        return atoms
