"""Every message of the designer has its French translation, the catalogues are in step with the
sources, plurals follow each language's rule, and the language switch works."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import read_mo
from flask import Flask
from flask.testing import FlaskClient

from designer.i18n import HERE, catalog, ngettext
from designer.i18n_fold import extract, main, po_path, read

PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")


def french() -> Catalog:
    return read(po_path("fr"), "fr")


def ids(found: Catalog) -> set[str | tuple[str, ...]]:
    return {m.id for m in found if m.id}


def forms(string: object) -> list[str]:
    return list(string) if isinstance(string, tuple | list) else [str(string)]


def test_the_template_is_up_to_date_with_the_sources() -> None:
    extracted = ids(extract())
    assert len(extracted) > 900  # the extraction itself works
    assert "Journeys" in extracted and "paused" in extracted  # templates; words from data
    on_file = ids(read(HERE / "messages.pot"))
    new, gone = sorted(map(str, extracted - on_file)), sorted(map(str, on_file - extracted))
    assert not new and not gone, (
        f"messages.pot is stale (new: {new[:10]}, gone: {gone[:10]}): "
        "run python -m designer.i18n_fold"
    )


def test_every_message_has_a_french_translation() -> None:
    po = french()
    assert ids(po) == ids(read(HERE / "messages.pot")), "run python -m designer.i18n_fold"
    untranslated = [m.id for m in po if m.id and not all(forms(m.string))]
    fuzzy = [m.id for m in po if m.id and m.fuzzy]
    assert not untranslated, f"{len(untranslated)} without French: {untranslated[:20]}"
    assert not fuzzy, f"{len(fuzzy)} fuzzy (check the French, then unmark): {fuzzy[:20]}"
    assert po.plural_forms == "nplurals=2; plural=(n > 1);"


def test_placeholders_survive_translation() -> None:
    for message in french():
        if not message.id:
            continue
        english = forms(message.id)
        wanted = sorted(set(PLACEHOLDER.findall(english[-1])))
        for text in forms(message.string):
            # a singular may write "1" for %(num)s, never another placeholder
            found = sorted(set(PLACEHOLDER.findall(text)))
            assert set(found) <= set(wanted), (message.id, text)
            if not isinstance(message.id, tuple):
                assert found == wanted, (message.id, text)


def test_the_compiled_catalogue_matches_the_po() -> None:
    with po_path("fr").with_suffix(".mo").open("rb") as handle:
        compiled = {tuple(forms(m.id)): tuple(forms(m.string)) for m in read_mo(handle) if m.id}
    written = {tuple(forms(m.id)): tuple(forms(m.string)) for m in french() if m.id and not m.fuzzy}
    assert compiled == written, "messages.mo is stale: run python -m designer.i18n_fold"


def test_no_json_catalogue_is_left_unfolded() -> None:
    left = sorted(p.name for p in HERE.glob("*.json"))
    assert not left, f"fold them in: python -m designer.i18n_fold designer/translations/{left[0]}"


def test_folding_a_json_file_translates_compiles_and_removes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    translations = tmp_path / "translations"
    shutil.copytree(HERE, translations)
    area = translations / "fr.test.json"
    area.write_text(json.dumps({"Journeys": "Voyages", "No such message": "Rien"}), "utf-8")
    from designer import i18n_fold

    assert i18n_fold.run([area], translations=translations) == 0
    assert not area.exists()
    assert "not in the sources, skipped: 'No such message'" in capsys.readouterr().err
    po = read(po_path("fr", translations), "fr")
    assert po["Journeys"].string == "Voyages"
    with po_path("fr", translations).with_suffix(".mo").open("rb") as handle:
        assert read_mo(handle)["Journeys"].string == "Voyages"
    assert "No such message" not in po
    # the real catalogue is untouched
    assert french()["Journeys"].string != "Voyages"


def test_fold_refuses_a_file_that_is_not_a_translation_map(tmp_path: Path) -> None:
    bad = tmp_path / "fr.bad.json"
    bad.write_text('["Journeys"]', "utf-8")
    with pytest.raises(SystemExit) as stop:
        main([str(bad)])
    assert stop.value.code == 2 and bad.exists()


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        (
            "en",
            ["0 signals raised", "1 signal raised", "5 signals raised", "10,002 signals raised"],
        ),
        (
            "fr",
            [
                "0 signal d'alerte",
                "1 signal d'alerte",
                "5 signaux d'alerte",
                "10\u202f002 signaux d'alerte",
            ],
        ),
    ],
)
def test_plurals_follow_the_language(designer_app: Flask, lang: str, expected: list[str]) -> None:
    with designer_app.test_request_context(f"/?lang={lang}"):
        shown = [
            ngettext("%(num)s signal raised", "%(num)s signals raised", n) for n in (0, 1, 5, 10002)
        ]
    assert shown == expected


def test_catalog_reads_the_french(designer_app: Flask) -> None:
    assert catalog("fr")["Journeys"] == french()["Journeys"].string
    assert catalog("en") == {}


def test_language_switch(login: Callable[[str], FlaskClient]) -> None:
    viewer = login("viewer")
    assert "Journeys" in viewer.get("/scenarios?lang=en").get_data(as_text=True)
    french_page = viewer.get("/scenarios?lang=fr").get_data(as_text=True)
    assert 'lang="fr"' in french_page and "Parcours clients" in french_page
    assert 'lang="fr"' in viewer.get("/scenarios").get_data(as_text=True)  # remembered


def test_accept_language_then_english(designer_app: Flask) -> None:
    client = designer_app.test_client()
    page = client.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert 'lang="fr"' in page.get_data(as_text=True)
    page = designer_app.test_client().get("/login", headers={"Accept-Language": "de"})
    assert 'lang="en"' in page.get_data(as_text=True)
