"""English and French for the designer.

Messages are written in English in the code and templates, wrapped in the underscore
function; `translations/fr.json` and `translations/fr.<area>.json` (one per designer area) map
each to French. A test extracts every message and fails if one has no French entry, so
nothing half-translated ships. The language comes from `?lang=`, then the session (a signed-in
user's choice), then the browser's Accept-Language; English is the fallback.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from flask import Flask, g, has_request_context, request, session

LANGUAGES = ("en", "fr")


def dynamic_messages() -> list[str]:
    """Words translated from data (`_(row.status)`): the extraction test checks these too."""
    from designer.editor_words import registry_help
    from engine.spec.model import OBJECTIVES
    from engine.store.models import SCENARIO_STATUSES, USER_ROLES

    actions = ("login", "save", "create", "publish", "pause", "resume", "password", "role")
    actions += ("export", "erase")  # a contact's data (designer/contact_privacy.py)
    kinds = ("scenario", "user", "session", "policy", "template", "disable", "enable", "contact")
    # the node-type registry's help (step types and their fields), shown by the editor
    return [*SCENARIO_STATUSES, *USER_ROLES, *OBJECTIVES, *actions, *kinds, *registry_help()]


HERE = Path(__file__).parent / "translations"


@cache
def catalog(lang: str) -> dict[str, str]:
    if lang == "en":
        return {}
    merged: dict[str, str] = {}
    for path in sorted(HERE.glob(f"{lang}.json")) + sorted(HERE.glob(f"{lang}.*.json")):
        merged.update(json.loads(path.read_text(encoding="utf-8")))
    return merged


def current_language() -> str:
    if not has_request_context():
        return "en"
    lang = g.get("lang")
    if lang in LANGUAGES:
        return str(lang)
    return "en"


def gettext(message: str, **values: Any) -> str:
    """The message in the current language, with %(name)s values filled in."""
    text = catalog(current_language()).get(message, message)
    return text % values if values else text


def _choose_language() -> None:
    asked = request.args.get("lang")
    if asked in LANGUAGES:
        session["lang"] = asked
    lang = session.get("lang")
    if lang not in LANGUAGES:
        lang = request.accept_languages.best_match(LANGUAGES, default="en")
    g.lang = lang


def init_app(app: Flask) -> None:
    app.before_request(_choose_language)
    app.jinja_env.globals.update(_=gettext, current_language=current_language)
