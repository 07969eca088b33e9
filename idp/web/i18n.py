"""Page languages (Flask-Babel): every user-facing string is a msgid in idp/translations.

The language of a request: the signed-in account's language setting (User.language), else
the `ui_locales` the relying party sent to /authorize (OIDC Core §3.1.2.1, kept in the Flask
session for the sign-in pages that follow), else the best match of the browser's
Accept-Language among the policy's locales (web.toml `locales`), else the first of them.
The catalogs ship as .po text (package data); they are compiled to .mo under the instance
directory when the app starts, so no binary is committed and a wheel installed anywhere
translates its pages."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, current_app, g, request, session
from flask_babel import Babel, get_locale

from idp.context import runtime
from idp.core.i18n import LANGUAGES_KEY, offered, policy_text

CATALOGS = Path(__file__).resolve().parent.parent / "translations"
DOMAIN = "messages"
# Pages served in the default language whatever the browser asks, so no page claims a
# language (<html lang>) it is not written in: none since the staff consoles were translated.
# A prefix goes here while its templates are on the PENDING list of
# tests/unit/test_translations.py.
UNTRANSLATED_PREFIXES: tuple[str, ...] = ()


UI_LOCALE = "ui_locale"  # Flask session key: the language /authorize's ui_locales asked for


def select_locale() -> str:
    """The request's language: the signed-in account's setting, else the relying party's
    ui_locales, else Accept-Language's best match among the policy's locales."""
    locales = runtime().policy.web.locales
    if not request or (UNTRANSLATED_PREFIXES and request.path.startswith(UNTRANSLATED_PREFIXES)):
        return locales[0]
    # The session a signed-in page loaded (sessions.current(), by its guard): never loaded
    # here, so choosing a language never renews a session on its own.
    sso = g.get("sso_session")
    account = offered(getattr(getattr(sso, "user", None), "language", None))
    if account:
        return account
    asked = offered(session.get(UI_LOCALE))
    if asked:
        return asked
    return request.accept_languages.best_match(locales, default=locales[0]) or locales[0]


def remember_ui_locales() -> None:
    """/authorize?ui_locales=es-MX es en: the first language offered here is kept (Flask
    session) for the sign-in pages of this browser; none offered: nothing changes."""
    if request.path != "/authorize":
        return
    try:
        value = request.args.get("ui_locales")
    except UnicodeDecodeError:  # refused with a readable 400 by web.security, after this hook
        return
    if value is None:
        return
    for tag in value[:200].split()[:10]:
        chosen = offered(tag.replace("_", "-").split("-")[0].lower())
        if chosen:
            if session.get(UI_LOCALE) != chosen:
                session[UI_LOCALE] = chosen
            return


def compile_catalogs(target: Path) -> None:
    """Each idp/translations/<lang>/LC_MESSAGES/messages.po as a .mo below `target`; written
    to a temporary file and renamed, so workers starting together never read half a file."""
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


def install(app: Flask) -> None:
    locales = runtime_locales(app)
    missing = [lang for lang in locales[1:]
               if not (CATALOGS / lang / "LC_MESSAGES" / f"{DOMAIN}.po").is_file()]
    if missing:  # a policy language without its catalog would show English under its name
        raise RuntimeError(f"web.toml locales {missing}: no catalog in {CATALOGS}")
    target = Path(app.instance_path) / "translations"
    compile_catalogs(target)
    app.config[LANGUAGES_KEY] = locales
    app.before_request(remember_ui_locales)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(target)
    app.config["BABEL_DEFAULT_LOCALE"] = locales[0]
    Babel(app, locale_selector=select_locale)
    app.jinja_env.policies["ext.i18n.trimmed"] = True  # a {% trans %} msgid without its line breaks
    app.jinja_env.globals["page_lang"] = _page_lang
    app.jinja_env.filters["policy_text"] = policy_text  # labels and texts of policy files


def runtime_locales(app: Flask) -> tuple[str, ...]:
    locales: tuple[str, ...] = app.extensions["idp"].policy.web.locales
    return locales


def _page_lang() -> str:
    """The `<html lang>` of the page being rendered."""
    locale = get_locale()
    return str(locale.language) if locale else runtime_locales(current_app)[0]
