"""The operator's file of trusted software-statement publishers
(IDP_SOFTWARE_STATEMENT_ISSUERS: a JSON object {"<iss>": <public JWK set>, ...}), parsed and
cached until it changes. The configuration checks it at start; /register reads it per request.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

_lock = threading.Lock()
_cache: dict[Path, tuple[float, dict[str, KeySet]]] = {}


def load_issuers(path: Path) -> dict[str, KeySet]:
    """Parse the trusted-publisher file (re-read when it changes). ValueError when invalid."""
    mtime = path.stat().st_mtime
    cached = _cache.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not data:
        raise ValueError("expected a JSON object of issuer -> JWK set")
    issuers = {}
    for issuer, keys in data.items():
        try:
            issuers[str(issuer)] = KeySet.import_key_set(keys)
        except (JoseError, ValueError, TypeError, KeyError):
            raise ValueError(f"issuer {issuer!r}: not a public JWK set") from None
    with _lock:
        _cache[path] = (mtime, issuers)
    return issuers
