"""The IdP as a SAML entity: its entity id, endpoints, key files, and the SPs holding a
session's assertions. Without pysaml2, so that installing the feature and ending sessions do
not load it (idp.lazymodule)."""

from __future__ import annotations

from sqlalchemy import select

from idp.context import settings
from idp.extensions import db
from idp.saml import keys as saml_keys
from idp.saml.models import SamlParticipant


def issuer() -> str:
    return settings().issuer.rstrip("/")


def entity_id() -> str:
    return issuer() + "/saml/metadata"


def endpoint(name: str) -> str:
    return f"{issuer()}/saml/{name}"


def key_files() -> saml_keys.KeyFiles:
    return saml_keys.ensure(settings().keys_dir, entity_id())


def participants_of(sids: list[str]) -> list[SamlParticipant]:
    """The SPs still holding an assertion of these sessions."""
    if not sids:
        return []
    return list(db.session.execute(select(SamlParticipant).where(
        SamlParticipant.sid.in_(sids), SamlParticipant.ended_at.is_(None))).scalars())
