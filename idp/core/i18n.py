"""gettext for the IdP's code: Flask-Babel's when the app installed it (idp.web.i18n), the
English source text otherwise (scripts and tests that build a bare Flask app, no context).

Extraction (babel.cfg) knows these as `_` and `_l`: import them under those names."""

from __future__ import annotations

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


def policy_text(value: str) -> str:
    """A text of a policy file (a factor or role label, a scope description, the daily
    acknowledgment) in the request's language: the shipped texts are msgids
    (idp/core/policy_texts.py); an operator's own text shows as written."""
    text = " ".join(str(value).split())
    return gettext(text)
