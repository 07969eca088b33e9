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
