"""The Spanish catalog is complete and every user-facing template string is translatable.

1. The msgids are extracted from the sources now (babel.cfg: Python `_`/`gettext`/`_l`/
   `lazy_gettext`, Jinja `_()` and `{% trans %}`): each must be in the es catalog, translated
   (every plural form), not fuzzy, with the same %(name)s placeholders; the catalog holds no
   msgid the sources no longer use.
2. A heuristic scan of the templates: visible text and prose-like string literals outside
   `_()`/`{% trans %}` fail the test, except in the templates of PENDING (not yet translated,
   listed so that the list only shrinks).

The demo relying parties (the portal and the EHR) have their own catalog, clients/translations
(clients/babel.cfg): the same checks hold for it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "idp" / "templates"
CATALOG = ROOT / "idp" / "translations" / "es" / "LC_MESSAGES" / "messages.po"
CLIENTS_CATALOG = ROOT / "clients" / "translations" / "es" / "LC_MESSAGES" / "messages.po"
CLIENT_TEMPLATES = [ROOT / "clients" / app / "templates" for app in ("portal", "ehr")]
# (sources, their extraction config, their es catalog): the IdP's and the relying parties'.
CATALOGS = {"idp": (ROOT / "idp", ROOT / "babel.cfg", CATALOG),
            "clients": (ROOT / "clients", ROOT / "clients" / "babel.cfg", CLIENTS_CATALOG)}
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}

# Templates not translated yet (empty since the staff consoles were translated; only shrinks).
PENDING: set[str] = set()
# Words that read the same in every language offered.
UNIVERSAL = {"IP", "NPI", "UTC", "USB", "NFC", "OK", "CSV", "JSON", "EPCS", "MFA", "SMS", "UDAP",
             "EHR", "MRN"}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _source_messages(which: str = "idp") -> dict[str | tuple[str, ...], str]:
    sources, config, _po = CATALOGS[which]
    with config.open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    found: dict[str | tuple[str, ...], str] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
            str(sources), method_map, options_map, keywords=KEYWORDS):
        found.setdefault(message, f"{sources.name}/{filename}:{lineno}")
    return found


def _catalog(which: str = "idp"):
    with CATALOGS[which][2].open("rb") as handle:
        return read_po(handle, locale="es")


@pytest.mark.parametrize("which", sorted(CATALOGS))
def test_every_source_message_is_translated_in_spanish(which):
    catalog = _catalog(which)
    entries = {m.id: m for m in catalog if m.id}
    problems = []
    found = _source_messages(which)
    assert len(found) > 50, f"{which}: the extraction found almost nothing ({len(found)})"
    for msgid, where in sorted(found.items(), key=lambda kv: kv[1]):
        entry = entries.get(msgid)
        if entry is None:
            problems.append(f"{where}: not in the es catalog: {msgid!r}")
            continue
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        if not all(s.strip() for s in strings):
            problems.append(f"{where}: untranslated: {msgid!r}")
        if entry.fuzzy:
            problems.append(f"{where}: fuzzy: {msgid!r}")
        ids = msgid if isinstance(msgid, tuple) else (msgid,)
        wanted = set().union(*(PLACEHOLDER.findall(i) for i in ids))
        for s in strings:
            if set(PLACEHOLDER.findall(s)) != wanted:
                problems.append(f"{where}: placeholders differ in {s!r}")
    assert not problems, f"es catalog ({which}/translations, see docs/i18n.md):\n" + \
        "\n".join(problems)


@pytest.mark.parametrize("which", sorted(CATALOGS))
def test_the_catalog_holds_no_stale_message(which):
    used = set(_source_messages(which))
    stale = [m.id for m in _catalog(which) if m.id and m.id not in used]
    assert not stale, f"{which}: msgids no source uses any more: {stale}"


def test_the_catalog_compiles_and_translates(tmp_path):
    from babel.support import Translations

    from idp.web.i18n import compile_catalogs

    compile_catalogs(tmp_path)
    spanish = Translations.load(str(tmp_path), ["es"])
    assert spanish.gettext("Sign in") == "Iniciar sesión"
    assert spanish.ngettext("Your password expires in %(count)s day.",
                            "Your password expires in %(count)s days.", 3) % {"count": 3} == \
        "Su contraseña vence en 3 días."


def test_the_clients_catalog_compiles_and_translates(tmp_path):
    from babel.support import Translations

    from clients.i18n import compile_catalogs

    compile_catalogs(tmp_path)
    spanish = Translations.load(str(tmp_path), ["es"])
    assert spanish.gettext("Open the EHR") == "Abrir el EHR"
    assert spanish.gettext("Sign in") == "Iniciar sesión"  # the same word as the IdP's


def test_a_missing_or_untranslated_clients_message_fails(tmp_path, monkeypatch):
    """The check above would catch a string of the portal left out of the es catalog."""
    po = tmp_path / "messages.po"
    text = CLIENTS_CATALOG.read_text()
    po.write_text(text.replace('msgstr "Abrir el EHR"', 'msgstr ""'))
    monkeypatch.setitem(CATALOGS, "clients", (*CATALOGS["clients"][:2], po))
    with pytest.raises(AssertionError, match="untranslated: 'Open the EHR'"):
        test_every_source_message_is_translated_in_spanish("clients")


# -- the template scan -----------------------------------------------------------------------
_TRANS = re.compile(r"{%-?\s*trans\b.*?{%-?\s*endtrans\s*-?%}", re.S)
_COMMENT = re.compile(r"{#.*?#}", re.S)
_CODE = re.compile(r"{{.*?}}|{%.*?%}", re.S)
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1>", re.S | re.I)
_TAG = re.compile(r"<[^>]*>", re.S)
_ATTR = re.compile(r'\b(?:placeholder|title|aria-label|alt)="([^"{]*)"')
_LITERAL = re.compile(r"""(?<![\w.])(_\(\s*)?("([^"\\]*)"|'([^'\\]*)')""")
_WORD = re.compile(r"[A-Za-z]{2,}")


def _prose(text: str) -> bool:
    return any(word not in UNIVERSAL for word in _WORD.findall(text))


def untranslated(source: str) -> list[str]:
    """Text a reader would see that no gettext call or trans block wraps."""
    found = []
    body = _COMMENT.sub(" ", _TRANS.sub(" ", source))
    for code in _CODE.findall(body):  # string literals inside expressions and tags
        for wrapped, _quoted, double, single in _LITERAL.findall(code):
            text = double or single
            if wrapped or "%" in text or not _prose(text):
                continue
            if " " in text.strip() or re.fullmatch(r"[A-Z][a-z]+", text):
                found.append(text)
    markup = _SCRIPT.sub(" ", _CODE.sub(" ", body))
    found += [a for a in _ATTR.findall(markup) if _prose(a)]
    for text in _TAG.sub("\n", markup).split("\n"):
        if _prose(text):
            found.append(text.strip())
    return found


def test_the_scan_finds_untranslated_text():
    assert untranslated("<p>Sign in</p>") == ["Sign in"]
    assert untranslated('<input placeholder="Work laptop">') == ["Work laptop"]
    assert untranslated('{{ x or "Unknown browser" }}') == ["Unknown browser"]
    assert untranslated('<p>{{ _("Sign in") }} {% trans %}Hello {{ n }}{% endtrans %}</p>') == []
    assert untranslated("<td>IP {{ s.ip }} · UTC</td><a href=\"{{ url_for('a.b') }}\">") == []


@pytest.mark.parametrize("template", sorted(
    str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*.html")) + sorted(
    str(p.relative_to(ROOT)) for folder in CLIENT_TEMPLATES for p in folder.rglob("*.html")))
def test_template_strings_are_translatable(template):
    path = ROOT / template if template.startswith("clients/") else TEMPLATES / template
    found = untranslated(path.read_text())
    if template in PENDING:
        assert found, f"{template} is translated now: take it off PENDING"
        return
    assert not found, f"{template}: wrap in _() or {{% trans %}}: {found}"


def test_every_shipped_policy_text_is_a_message():
    """Labels and texts of the shipped policy files reach the pages through policy_text():
    each must be listed in idp/core/policy_texts.py (so extracted, so translated)."""
    from idp.core.policy_texts import SHIPPED
    from idp.policy import load_policy

    policy = load_policy(ROOT / "idp" / "policies")
    texts = [spec.label for spec in policy.mfa.factors.values()]
    texts += [role.label for role in policy.roles.values()]
    texts += [scope.description for scope in policy.scopes.values()]
    texts += [policy.acknowledgment.title, policy.acknowledgment.text]
    listed = {str(text) for text in SHIPPED}
    missing = [t for t in (" ".join(t.split()) for t in texts) if t not in listed]
    assert not missing, f"add to idp/core/policy_texts.py: {missing}"
