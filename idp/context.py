"""Per-application objects (settings, policy, key store, password hasher) for services."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from argon2 import PasswordHasher, Type
from flask import current_app

from idp.config import Settings
from idp.policy import Policy

if TYPE_CHECKING:  # built by create_app: the core does not import the key layer
    from idp.keys.store import KeyStore


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    keystore: KeyStore
    hasher: PasswordHasher
    # Verified against when the account is unknown, so that costs what a known one costs.
    dummy_hash: str

    @classmethod
    def build(cls, settings: Settings, policy: Policy, store: KeyStore) -> Runtime:
        a = policy.argon2
        hasher = PasswordHasher(time_cost=a.time_cost, memory_cost=a.memory_cost,
                                parallelism=a.parallelism, hash_len=a.hash_len,
                                salt_len=a.salt_len, type=Type.ID)
        return cls(settings, policy, store, hasher, hasher.hash(secrets.token_urlsafe(16)))


def runtime() -> Runtime:
    return current_app.extensions["idp"]


def settings() -> Settings:
    return runtime().settings


def policy() -> Policy:
    return runtime().policy


def keystore() -> KeyStore:
    return runtime().keystore
