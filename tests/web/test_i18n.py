"""Every message of the designer has its French translation, and the language switch works."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from flask.testing import FlaskClient

from designer.i18n import catalog, dynamic_messages

DESIGNER = Path(__file__).resolve().parents[2] / "designer"
# _("...") or _('...') in Python and templates; gettext("...") in Python.
CALL = re.compile(r"""(?<![\w.])(?:_|gettext)\(\s*(?P<q>["'])(?P<msg>(?:\\.|(?!(?P=q)).)*)(?P=q)""")


def messages() -> set[str]:
    found: set[str] = set()
    for path in [*DESIGNER.glob("*.py"), *DESIGNER.glob("templates/*.html")]:
        for match in CALL.finditer(path.read_text(encoding="utf-8")):
            found.add(match.group("msg").replace("\\'", "'").replace('\\"', '"'))
    return found | set(dynamic_messages())


def test_every_message_has_a_french_translation() -> None:
    found = messages()
    assert len(found) > 100  # the extraction itself works
    french = catalog("fr")
    missing = sorted(m for m in found if not french.get(m))
    assert not missing, f"{len(missing)} messages without French: {missing[:20]}"


def test_placeholders_survive_translation() -> None:
    french = catalog("fr")
    for english in messages():
        wanted = sorted(re.findall(r"%\(\w+\)[sd]", english))
        assert sorted(re.findall(r"%\(\w+\)[sd]", french.get(english, english))) == wanted, english


def test_language_switch(login: Callable[[str], FlaskClient]) -> None:
    viewer = login("viewer")
    assert "Journeys" in viewer.get("/scenarios?lang=en").get_data(as_text=True)
    french = viewer.get("/scenarios?lang=fr").get_data(as_text=True)
    assert 'lang="fr"' in french and "Parcours clients" in french
    assert 'lang="fr"' in viewer.get("/scenarios").get_data(as_text=True)  # remembered
