"""Accounts: users, passwords (argon2id), login."""
