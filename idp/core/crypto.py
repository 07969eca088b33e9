"""Secrets at rest: SHA-256 digests of high-entropy secrets, and encryption (Fernet) of the
few kept recoverable (TOTP seeds, queued mail bodies).

The data key comes from IDP_DATA_KEY, or is generated once into the key directory (mode 0600)
so every node sharing keys/ decrypts alike.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet

from idp.context import settings

KEY_FILE = "data-encryption.key"


def digest(value: str) -> str:
    """SHA-256 of a high-entropy secret (codes, tokens, client secrets).

    These are random 256-bit values, so a fast hash is enough: brute force is not a threat and a
    slow hash would only slow the token endpoint. Passwords use argon2id instead.
    """
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@lru_cache(maxsize=4)
def _fernet(env_key: str | None, keys_dir: str) -> Fernet:
    if env_key:
        return Fernet(env_key.encode())
    path = Path(keys_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
        try:
            os.link(tmp, path)  # atomic: a complete file or none; first writer wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return Fernet(path.read_bytes().strip())


def fernet() -> Fernet:
    conf = settings()
    return _fernet(conf.data_key, str(conf.keys_dir))


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    return fernet().decrypt(token.encode()).decode()
