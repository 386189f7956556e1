"""Keep the designer's catalogues in step with the sources, and fold JSON translations in.

    python -m designer.i18n_fold                      # re-extract, update the French, compile
    python -m designer.i18n_fold designer/translations/fr.<area>.json [...]

Each run extracts every message into `translations/messages.pot` (the map is `babel.cfg`),
updates `fr/LC_MESSAGES/messages.po` from it (new messages untranslated, changed ones marked
fuzzy, gone ones dropped) and compiles `messages.mo`. A JSON file given on the command line,
{"English message": "French"}, is folded into the .po first and then deleted (`--keep` keeps
it): that is how a page written with its French in `fr.<area>.json` joins the catalogue.
A message of the JSON that the sources no longer use is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from designer.i18n import DOMAIN, HERE

ROOT = HERE.parents[1]
# Fixed, so that extracting twice gives the same file (and no merge conflict on the header).
EPOCH = datetime(2025, 1, 1)
PLURAL_FORMS = {"fr": "nplurals=2; plural=(n > 1);"}


def po_path(lang: str, translations: Path = HERE) -> Path:
    return translations / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def extract() -> Catalog:
    """Every message of the designer, as babel.cfg maps the sources."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    template = Catalog(project="Parcours", creation_date=EPOCH, charset="utf-8", fuzzy=False)
    for _file, _line, message, comments, context in extract_from_dir(ROOT, method_map, options_map):
        template.add(message, None, auto_comments=comments, context=context)
    return template


def read(path: Path, lang: str | None = None) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle, locale=lang)


def write(path: Path, catalog: Catalog) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        write_po(handle, catalog, no_location=True, sort_output=True, ignore_obsolete=True)


def compile_mo(lang: str, translations: Path = HERE) -> Path:
    catalog = read(po_path(lang, translations), lang)
    target = po_path(lang, translations).with_suffix(".mo")
    with target.open("wb") as handle:
        write_mo(handle, catalog, use_fuzzy=False)
    return target


def fold(catalog: Catalog, french: dict[str, str]) -> list[str]:
    """Put each translation in the catalogue; returns the messages the sources do not use."""
    unused = []
    for english, text in french.items():
        message = catalog.get(english)
        if message is None or not isinstance(message.id, str):
            unused.append(english)
            continue
        message.string = text
        message.flags.discard("fuzzy")
    return unused


def run(files: list[Path], lang: str = "fr", keep: bool = False, translations: Path = HERE) -> int:
    template = extract()
    write(translations / f"{DOMAIN}.pot", template)
    path = po_path(lang, translations)
    if path.exists():
        catalog = read(path, lang)
        catalog.update(template, update_creation_date=False)
    else:
        catalog = Catalog(locale=lang, project="Parcours", creation_date=EPOCH, fuzzy=False)
        # gettext's usual rule (0 and 1 singular), not CLDR's third form for round millions
        catalog.mime_headers = [
            ("Plural-Forms", PLURAL_FORMS.get(lang, "nplurals=2; plural=(n != 1);"))
        ]
        catalog.update(template, update_creation_date=False)
    catalog.revision_date = EPOCH
    for file in files:
        unused = fold(catalog, json.loads(file.read_text(encoding="utf-8")))
        for english in unused:
            print(f"{file}: not in the sources, skipped: {english!r}", file=sys.stderr)
    write(path, catalog)
    compile_mo(lang, translations)
    missing = [m.id for m in catalog if m.id and (not _translated(m.string) or m.fuzzy)]
    print(f"{path}: {len(catalog) - 1} messages, {len(missing)} to translate")
    for english in missing[:20]:
        print(f"  to translate: {english!r}")
    if not keep:
        for file in files:
            file.unlink()
            print(f"folded and removed {file}")
    return 0


def _translated(string: object) -> bool:
    if isinstance(string, tuple | list):
        return all(string)
    return bool(string)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m designer.i18n_fold", description=__doc__)
    parser.add_argument("files", nargs="*", type=Path, help="fr.<area>.json files to fold in")
    parser.add_argument("--keep", action="store_true", help="keep the JSON files after folding")
    args = parser.parse_args(argv)
    for file in args.files:
        if not file.is_file():
            parser.error(f"{file}: no such file")
        try:
            french = json.loads(file.read_text(encoding="utf-8"))
        except ValueError as exc:
            parser.error(f"{file}: not JSON ({exc})")
        if not isinstance(french, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in french.items()
        ):
            parser.error(f'{file}: expected {{"English message": "French", ...}}')
    return run(args.files, keep=args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
