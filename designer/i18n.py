"""English and French for the designer, through Flask-Babel and gettext catalogues.

Messages are written in English in the code and templates: `_("...", name=value)` (gettext)
and `ngettext("%(num)s contact", "%(num)s contacts", n)` for every message with a count; `num`
is filled in with the count written the language's way. The catalogues live in `translations/`:

- `messages.pot`, every message, extracted with pybabel: `babel.cfg` (repository root) maps the
  Python modules, the templates, and the words translated from data (`dynamic_messages`, read by
  `extract_dynamic`);
- `fr/LC_MESSAGES/messages.po`, the French; `messages.mo` beside it, compiled from it.

The .mo is committed (a test checks it matches the .po): a wheel and `pip install -e .` then
both ship it as package data with no build step. setuptools has no gettext hook, and compiling
at start-up would need a writable package folder, which an installed wheel may not have.

After changing messages: `python -m designer.i18n_fold` re-extracts the .pot, updates the .po
(new messages come untranslated, changed ones fuzzy), and recompiles; fill in the French in the
.po and run it again. French written as JSON ({"English": "French"}, the older format) folds in
with `python -m designer.i18n_fold designer/translations/fr.<area>.json`, which removes the file.

The language comes from `?lang=` (remembered in the session), then the session (a signed-in
user's choice), then the browser's Accept-Language; English is the fallback. Times are shown in
the workspace zone (`PARCOURS_TIMEZONE`); see `designer.i18n_formats`.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import IO, Any

import flask_babel
from babel.messages.extract import extract_python
from babel.messages.pofile import read_po
from flask import Flask, current_app, g, has_request_context, request, session

LANGUAGES = ("en", "fr")
HERE = Path(__file__).parent / "translations"
DOMAIN = "messages"


def dynamic_messages() -> list[str]:
    """Words translated from data (`_(row.status)`): extraction puts these in the catalogue."""
    from designer.editor_words import registry_help
    from engine.spec.model import OBJECTIVES
    from engine.store.models import API_KEY_SCOPES, SCENARIO_STATUSES, USER_ROLES

    actions = ("login", "save", "create", "publish", "pause", "resume", "password", "role")
    actions += ("export", "erase")  # a contact's data (designer/contact_privacy.py)
    actions += ("revoke", "reset_password", "lift")  # API keys, the CLI, suppressions (API)
    kinds = ("scenario", "user", "session", "policy", "template", "disable", "enable", "contact")
    kinds += ("api_key", "suppression")
    # the node-type registry's help (step types and their fields), shown by the editor
    return [*SCENARIO_STATUSES, *USER_ROLES, *API_KEY_SCOPES, *OBJECTIVES, *actions, *kinds,
            *registry_help()]  # fmt: skip


def extract_dynamic(
    fileobj: IO[bytes], keywords: Any, comment_tags: Any, options: Any
) -> Iterator[tuple[int, str, str | tuple[str, ...], list[str]]]:
    """A pybabel extraction method (see babel.cfg): this module's own calls, then the words
    translated from data, which no extractor can read in the sources."""
    yield from extract_python(fileobj, keywords, comment_tags, options)
    for message in dict.fromkeys(dynamic_messages()):
        yield 0, "_", message, ["translated from data"]


@cache
def catalog(lang: str) -> dict[str, str]:
    """English to `lang` for every translated singular message (read from the .po)."""
    path = HERE / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if lang == "en" or not path.exists():
        return {}
    with path.open("rb") as handle:
        po = read_po(handle, locale=lang)
    return {
        str(m.id): str(m.string)
        for m in po
        if m.id and isinstance(m.id, str) and m.string and not m.fuzzy
    }


def _follow_override() -> None:
    """`g.lang`, set by code that renders for someone else (or by a test), wins over the
    request's language; Flask-Babel caches the locale per request, so forget it on a change."""
    wanted = g.get("lang")
    if wanted in LANGUAGES:
        locale = flask_babel.get_locale()
        if locale is None or locale.language != wanted:
            flask_babel.refresh()


def current_language() -> str:
    if not has_request_context():
        return "en"
    _follow_override()
    locale = flask_babel.get_locale()
    lang = locale.language if locale is not None else "en"
    return lang if lang in LANGUAGES else "en"


def gettext(message: str, **values: Any) -> str:
    """The message in the current language, with %(name)s values filled in."""
    if has_request_context():
        _follow_override()
    return flask_babel.gettext(message, **values)


def ngettext(singular: str, plural: str, n: int, **values: Any) -> str:
    """The singular or plural form for `n` (French: 0 and 1 take the singular), `%(num)s`
    being `n` written the language's way (10,002 / 10 002) unless given."""
    if has_request_context():
        _follow_override()
    if "num" not in values:
        from designer.i18n_formats import number

        values["num"] = number(n)
    return str(flask_babel.get_translations().ungettext(singular, plural, n)) % values


def lazy_gettext(message: str, **values: Any) -> Any:
    """A message translated when shown (for module-level constants)."""
    return flask_babel.lazy_gettext(message, **values)


def _choose_language() -> str:
    """Called by Flask-Babel once per request, whenever a message is first translated."""
    if g.get("lang") in LANGUAGES:
        return str(g.lang)
    asked = request.args.get("lang")
    if asked in LANGUAGES:
        return asked
    lang = session.get("lang")
    if lang in LANGUAGES:
        return str(lang)
    return request.accept_languages.best_match(LANGUAGES, default="en")


def _remember_language() -> None:
    asked = request.args.get("lang")
    if asked in LANGUAGES:
        session["lang"] = asked


def _workspace_zone() -> str:
    return str(current_app.extensions["parcours"].settings.timezone)


def init_app(app: Flask) -> None:
    from designer import i18n_formats

    flask_babel.Babel(
        app,
        locale_selector=_choose_language,
        timezone_selector=_workspace_zone,
        default_translation_directories=str(HERE),
        default_domain=DOMAIN,
    )
    app.before_request(_remember_language)
    # Our `_` and `ngettext` keep plain-string semantics (the value is escaped when shown);
    # Flask-Babel's Jinja set-up installs Jinja's newstyle ones, which would treat every
    # translation as markup and every "%" as a placeholder.
    app.jinja_env.globals.update(
        _=gettext, gettext=gettext, ngettext=ngettext, current_language=current_language
    )
    i18n_formats.init_app(app)
