"""The scenario files the designer reads and writes: `PARCOURS_SCENARIOS_DIR/<id>.yaml`.

The files are the source of truth (developers commit them); the designer writes them atomically
(temporary file + rename), never outside the folder, and refuses to overwrite a file that changed
on disk since the editor loaded it (a commit pulled meanwhile is not silently lost).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import NotFound
from engine.spec.lint import scenario_files
from engine.spec.loader import LintResult, lint_document, read_scenario_text, scenario_bundle

SCENARIO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


# A file's lint result depends on its text and on the folder's templates/, segments/ and
# channels.yaml; while none of these changed, the list page and the editor reuse it instead of
# linting every file on every request (500 journeys: seconds). Bounded; shared by the threads.
LINTED_FILES = 2048
_linted: OrderedDict[tuple[str, str, tuple[Any, ...]], tuple[LintResult, dict[str, Any]]] = (
    OrderedDict()
)
_linted_lock = threading.Lock()


def folder_stamp(folder: Path) -> tuple[Any, ...]:
    """What, beside a scenario's own text, its lint reads from the folder: each file's name,
    size and modification time."""
    stamp: list[Any] = []
    for sub in ("templates", "segments"):
        for dirpath, _dirs, names in sorted(os.walk(folder / sub)):
            for name in sorted(names):
                stat = os.stat(os.path.join(dirpath, name))
                stamp.append((dirpath, name, stat.st_size, stat.st_mtime_ns))
    try:
        stat = os.stat(folder / "channels.yaml")
        stamp.append(("channels.yaml", stat.st_size, stat.st_mtime_ns))
    except OSError:
        pass
    return tuple(stamp)


class Conflict(Exception):
    """The file changed on disk since it was loaded."""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class ScenarioFile:
    """One scenario file of the workspace, linted."""

    id: str
    path: Path
    text: str
    result: LintResult
    # what pages derive from the file (its bundle's hash...), kept with its cached lint
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def data(self) -> dict[str, Any]:
        return self.result.data if isinstance(self.result.data, dict) else {}

    @property
    def name(self) -> str:
        return str(self.data.get("name") or self.id)

    @property
    def errors(self) -> int:
        return sum(1 for p in self.result.problems if p.severity == "error")

    @property
    def hash(self) -> str:
        return text_hash(self.text)


class Workspace:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def templates(self) -> Path:
        return self.folder / "templates"

    def path_for(self, scenario_id: str) -> Path:
        """The file of a scenario id; NotFound for an id that cannot be a file name here."""
        if not SCENARIO_ID.match(scenario_id):
            raise NotFound(f"no scenario '{scenario_id}'")
        for suffix in (".yaml", ".yml"):
            candidate = self.folder / f"{scenario_id}{suffix}"
            if candidate.is_file():
                return candidate
        return self.folder / f"{scenario_id}.yaml"

    def ids(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return [p.stem for p in scenario_files([self.folder]) if SCENARIO_ID.match(p.stem)]

    def load(self, scenario_id: str, stamp: tuple[Any, ...] | None = None) -> ScenarioFile:
        """A file and its lint (`stamp`: the folder's, when the caller has it already)."""
        path = self.path_for(scenario_id)
        text = read_scenario_text(path)
        key = (str(path), text_hash(text), folder_stamp(self.folder) if stamp is None else stamp)
        with _linted_lock:
            found = _linted.get(key)
            if found is not None:
                _linted.move_to_end(key)
        if found is None:
            found = (self.lint(text, path), {})
            with _linted_lock:
                _linted[key] = found
                while len(_linted) > LINTED_FILES:
                    _linted.popitem(last=False)
        return ScenarioFile(scenario_id, path, text, *found)

    def lint(self, text: str, path: Path | None = None) -> LintResult:
        return lint_document(text, str(path) if path else None, self.templates)

    def all(self) -> list[ScenarioFile]:
        found = []
        stamp = folder_stamp(self.folder)
        for scenario_id in self.ids():
            try:
                found.append(self.load(scenario_id, stamp))
            except Exception:  # an unreadable file is listed by lint, not here
                continue
        return found

    def bundle(self, scenario_id: str) -> dict[str, Any]:
        return scenario_bundle(self.path_for(scenario_id))

    def exists(self, scenario_id: str) -> bool:
        try:
            return self.path_for(scenario_id).is_file()
        except NotFound:
            return False

    def write(self, scenario_id: str, text: str, expected_hash: str | None) -> Path:
        """Replace the file atomically; Conflict if its current text is not `expected_hash`
        (None: the file must not exist yet)."""
        path = self.path_for(scenario_id)
        try:
            current: str | None = read_scenario_text(path)
        except NotFound:
            current = None
        if (current is None) != (expected_hash is None) or (
            current is not None and text_hash(current) != expected_hash
        ):
            raise Conflict(str(path))
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text)
        return path


def write_atomically(path: Path, text: str) -> None:
    """Replace a file's text in one step (temporary file + rename): a reader never sees half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
