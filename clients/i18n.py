"""Page languages of the demo relying parties (the portal and the EHR): English and Spanish.

Flask-Babel, like the IdP (docs/i18n.md), with the relying parties' own catalog
(clients/translations/<lang>/LC_MESSAGES/messages.po; the RPs never import the IdP). The
language of a request: the signed-in user's `locale` claim (OIDC Core §5.1, released by the
IdP with the profile scope from the account's language setting) when it names a language
offered here, else the best match of the browser's Accept-Language, else English. The RPs
pass it to the IdP as `ui_locales`, so the sign-in pages speak the same language.

The .po files are compiled to .mo under the RP's state directory when the app starts (no
binary in git), as the IdP does."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import flask_babel
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, current_app, has_app_context, has_request_context, request, session
from flask_babel import Babel
from flask_babel.speaklater import LazyString

CATALOGS = Path(__file__).resolve().parent / "translations"
DOMAIN = "messages"
LOCALES = ("en", "es")  # the first: the source language and the default


def gettext(string: str, **variables: Any) -> str:
    """Flask-Babel's gettext once the app installed it; the English text otherwise (unit tests
    of the decision functions, no app)."""
    if has_app_context() and "babel" in current_app.extensions:
        return flask_babel.gettext(string, **variables)
    return string % variables if variables else string


def lazy_gettext(string: str, **variables: Any) -> LazyString:
    """Translated when used (module constants), in the language of that request."""
    return LazyString(gettext, string, **variables)


def supported(value: object) -> str | None:
    """The language offered here that a BCP 47 tag (`es-MX`, `en`) names, or None."""
    if not isinstance(value, str):
        return None
    language = value.strip().replace("_", "-").split("-")[0].lower()
    return language if language in LOCALES else None


def select_locale() -> str:
    """The signed-in user's `locale` claim, else Accept-Language, else English."""
    if not has_request_context():
        return LOCALES[0]
    chosen = supported((session.get("user") or {}).get("locale"))
    if chosen:
        return chosen
    return request.accept_languages.best_match(LOCALES, default=LOCALES[0]) or LOCALES[0]


def page_lang() -> str:
    """The `<html lang>` of the page being rendered."""
    locale = flask_babel.get_locale()
    return str(locale.language) if locale else LOCALES[0]


def compile_catalogs(target: Path) -> None:
    """Each clients/translations/<lang>/LC_MESSAGES/messages.po as a .mo below `target`,
    written to a temporary file and renamed (workers starting together)."""
    for po in sorted(CATALOGS.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        lang = po.parent.parent.name
        with po.open("rb") as source:
            catalog = read_po(source, locale=lang, domain=DOMAIN)
        out_dir = target / lang / "LC_MESSAGES"
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".mo.tmp")
        with os.fdopen(fd, "wb") as handle:
            write_mo(handle, catalog)
        os.replace(tmp, out_dir / f"{DOMAIN}.mo")


def install(app: Flask, state_dir: str) -> None:
    missing = [lang for lang in LOCALES[1:]
               if not (CATALOGS / lang / "LC_MESSAGES" / f"{DOMAIN}.po").is_file()]
    if missing:
        raise RuntimeError(f"relying-party languages {missing}: no catalog in {CATALOGS}")
    target = Path(state_dir) / f"translations-{app.name.replace('.', '-')}"
    compile_catalogs(target)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(target)
    app.config["BABEL_DEFAULT_LOCALE"] = LOCALES[0]
    Babel(app, locale_selector=select_locale)
    app.jinja_env.policies["ext.i18n.trimmed"] = True
    app.jinja_env.globals["page_lang"] = page_lang


def N_(string: str) -> str:  # noqa: N802 - gettext's name for "mark only"
    """Marks a text for the catalog where it must stay English until shown (kept in the
    session, say); the page translates it with _() when it renders it."""
    return string


def UNREACHABLE_CHECK() -> str:  # noqa: N802 - reads as the constant it stands for
    return gettext("The identity provider cannot be reached to check your access. Try again "
                   "in a moment.")
