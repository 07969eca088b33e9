"""Admin console forms (Flask-WTF: every POST carries a CSRF token)."""

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    IntegerField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from idp.core.i18n import lazy_gettext as _l
from idp.oidc.clients import AUTH_METHODS, GRANT_TYPES


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def lines(text: str | None) -> list[str]:
    """One URI per line (blank lines ignored)."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class ClientForm(FlaskForm):
    client_name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    redirect_uris = TextAreaField(_l("Redirect URIs (one per line)"), validators=[Length(max=8000)])
    post_logout_redirect_uris = TextAreaField(_l("Post-logout redirect URIs (one per line)"),
                                              validators=[Length(max=8000)])
    backchannel_logout_uri = StringField(_l("Back-channel logout URI"),
                                         validators=[Optional(), Length(max=500)])
    grant_types = MultiCheckboxField(_l("Grant types"),
                                     choices=[SelectChoice(g) for g in GRANT_TYPES],
                                     default=["authorization_code", "refresh_token"])
    scope = StringField(_l("Scopes (space-separated)"), default="openid profile email",
                        validators=[DataRequired(), Length(max=1000)])
    token_endpoint_auth_method = SelectField(_l("Token endpoint authentication"),
                                             choices=[SelectChoice(m) for m in AUTH_METHODS],
                                             default="client_secret_basic")
    require_pkce = BooleanField(_l("Require PKCE"), default=True)
    first_party = BooleanField(_l("First party (no consent page)"))
    # Seconds; empty = the policy default. Bounds (policies/tokens.toml) are checked by
    # idp.oidc.clients.validate_lifetimes, which names the allowed range.
    access_token_lifetime = IntegerField(_l("Access token lifetime (seconds)"),
                                         validators=[Optional()])
    id_token_lifetime = IntegerField(_l("ID token lifetime (seconds)"), validators=[Optional()])
    refresh_token_lifetime = IntegerField(_l("Refresh token lifetime (seconds)"),
                                          validators=[Optional()])


class RegistrationTokenForm(FlaskForm):
    lifetime_hours = IntegerField(_l("Valid for (hours)"), default=24,
                                  validators=[DataRequired(), NumberRange(min=1, max=720)])
    uses = IntegerField(_l("Registrations allowed"), default=1,
                        validators=[DataRequired(), NumberRange(min=1, max=100)])
    note = StringField(_l("Note (who it is for)"), validators=[Optional(), Length(max=200)])
