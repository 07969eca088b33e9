"""gettext for the IdP's code: Flask-Babel's when the app installed it (idp.web.i18n), the
English source text otherwise (scripts and tests that build a bare Flask app, no context).

Extraction (babel.cfg) knows these as `_` and `_l`: import them under those names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import flask_babel
from flask import current_app, has_app_context
from flask_babel.speaklater import LazyString


def gettext(string: str, **variables: Any) -> str:
    if has_app_context() and "babel" in current_app.extensions:
        return flask_babel.gettext(string, **variables)
    return string % variables if variables else string


def lazy_gettext(string: str, **variables: Any) -> LazyString:
    """Translated when used (module constants, form labels): in the language of that request."""
    return LazyString(gettext, string, **variables)


# Each offered language named in itself (the settings page's choices; never translated).
LANGUAGE_NAMES = {"en": "English", "es": "Español"}
LANGUAGES_KEY = "IDP_LANGUAGES"  # app.config: the policy's locales (idp.web.i18n.install)


def offered(language: object) -> str | None:
    """`language` when it is one of the app's page languages (web.toml `locales`), else
    None; outside an app, None."""
    if not isinstance(language, str) or not has_app_context():
        return None
    return language if language in current_app.config.get(LANGUAGES_KEY, ()) else None


@contextmanager
def speaking(language: str | None) -> Iterator[None]:
    """Texts composed inside this block (a mail or a text message to an account) are in
    `language` (the account's setting) when it is offered; otherwise in the request's."""
    chosen = offered(language)
    if chosen is None or "babel" not in current_app.extensions:
        yield
        return
    with flask_babel.force_locale(chosen):
        yield


def policy_text(value: str) -> str:
    """A text of a policy file (a factor or role label, a scope description, the daily
    acknowledgment) in the request's language: the shipped texts are msgids
    (idp/core/policy_texts.py); an operator's own text shows as written."""
    text = " ".join(str(value).split())
    return gettext(text)
