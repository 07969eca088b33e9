"""Hashes of high-entropy secrets."""

from __future__ import annotations

import hashlib


def digest(value: str) -> str:
    """SHA-256 of a high-entropy secret (codes, tokens, client secrets, session ids).

    These are random 256-bit values, so a fast hash is enough: brute force is not a threat and a
    slow hash would only slow the token endpoint. Passwords use argon2id instead.
    """
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
