"""Per-application objects (settings, policy, key store, password hasher) for services."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from flask import current_app

from idp.config import Settings
from idp.keys.store import KeyStore
from idp.policy import Policy


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    keystore: KeyStore
    hasher: PasswordHasher
    # Verified against when the account is unknown, so that costs what a known one costs.
    dummy_hash: str

    @classmethod
    def build(cls, settings: Settings, policy: Policy) -> Runtime:
        a = policy.argon2
        hasher = PasswordHasher(time_cost=a.time_cost, memory_cost=a.memory_cost,
                                parallelism=a.parallelism, hash_len=a.hash_len,
                                salt_len=a.salt_len, type=Type.ID)
        store = KeyStore(settings.keys_dir, policy.keys.algorithms, policy.keys.rsa_key_size,
                         policy.max_token_lifetime)
        return cls(settings, policy, store, hasher, hasher.hash(secrets.token_urlsafe(16)))


def runtime() -> Runtime:
    return current_app.extensions["idp"]


def settings() -> Settings:
    return runtime().settings


def policy() -> Policy:
    return runtime().policy


def keystore() -> KeyStore:
    return runtime().keystore
