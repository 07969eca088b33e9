"""The admin console's SAML forms (the CLI's `idp saml sps create|delete`)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import StringField
from wtforms.validators import Length

from idp.core.i18n import lazy_gettext as _l


class SpForm(FlaskForm):
    """Register a service provider from its metadata: an uploaded file or a URL."""

    name = StringField(_l("Name"), validators=[Length(max=200)])
    metadata_url = StringField(_l("Metadata URL"), validators=[Length(max=2048)])
    metadata_file = FileField(_l("Metadata file"))
    # persistent | email | transient, or empty (the policy's default): checked by the registry
    nameid_format = StringField(_l("NameID format"), validators=[Length(max=20)])


class DeleteForm(FlaskForm):
    """Delete one service provider: its entityID and the CSRF token."""

    entity_id = StringField(validators=[Length(max=1024)])
