"""Signing keys: the key store in keys/, rotation and the JWKS."""
