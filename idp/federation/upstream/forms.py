"""Forms of the upstream pages (CSRF-protected like every form)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from idp.core.i18n import lazy_gettext as _l


class ProveAccountForm(FlaskForm):
    """The existing account's password (its second factor follows on the challenge page)."""

    username = StringField(_l("Username or NPI"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])


class ButtonForm(FlaskForm):
    """A button-only POST: the CSRF token is the whole form."""


class UpstreamForm(FlaskForm):
    """The admin console's "Add an upstream" form (the CLI's `idp upstreams create`)."""

    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=64)])
    issuer = StringField(_l("Issuer URL"), validators=[DataRequired(), Length(max=500)])
    client_id = StringField(_l("Client ID"), validators=[DataRequired(), Length(max=255)])
    client_secret = PasswordField(_l("Client secret"), validators=[Length(max=1024)])
    client_secret_env = StringField(_l("or: environment variable holding it"),
                                    validators=[Length(max=100)])
    scope = StringField(_l("Scope"), default="openid profile email",
                        validators=[DataRequired(), Length(max=500)])
    link_by = StringField(_l("Link by"), default="email",
                          validators=[Length(max=10)])  # checked by service.create
    allowed_domains = StringField(_l("Allowed domains (space-separated)"),
                                  validators=[Length(max=1000)])
