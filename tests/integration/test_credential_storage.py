"""ASVS 2.4.1, 2.8.2, 2.10: what is stored for each credential. Passwords as argon2id with the
policy's parameters; TOTP seeds encrypted; client secrets and refresh tokens as digests only."""

from __future__ import annotations

import sqlalchemy as sa

from idp.context import policy
from idp.extensions import db
from tests.helpers import PASSWORD, TOTP_SECRETS, exchange, get_code, login, make_client, make_user


def _dump() -> str:
    """Every value of every table, as text."""
    rows = []
    for table in db.metadata.sorted_tables:
        rows += [repr(tuple(row)) for row in db.session.execute(sa.select(table))]
    return "\n".join(rows)


def test_passwords_argon2id_seeds_encrypted_secrets_and_tokens_hashed(ctx, client):
    user = make_user()
    rp = make_client()
    login(client)
    code, verifier, _ = get_code(client, rp)
    tokens = exchange(client, rp, code, verifier).get_json()
    a = policy().argon2
    assert user.password_hash.startswith(
        f"$argon2id$v=19$m={a.memory_cost},t={a.time_cost},p={a.parallelism}$")
    everything = _dump()
    for secret in (PASSWORD, TOTP_SECRETS["drsmith"], rp.client_secret, tokens["refresh_token"],
                   code):
        assert secret not in everything
