"""The comment-keeping round trip behind `yamlio.load_roundtrip` (house layout: see yamlio)."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

from ruamel.yaml import YAML, events
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import ScalarString

from engine.errors import ScenarioInvalid
from engine.spec.problems import Problem

Path = tuple[str | int, ...]
_MARKERS = "_parcours_markers"  # attribute of a round-trip document: text ruamel drops


def _roundtrip_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 1_000_000  # never re-wrap a long line the author wrote on one line
    return yaml


def _split_markers(text: str) -> tuple[str, str, str]:
    """Split off what ruamel drops: comments up to a leading '---' line, and a trailing '...'."""
    lines = text.splitlines(keepends=True)
    prefix_end = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("---"):
            prefix_end = i + 1
            break
        if stripped and not stripped.startswith("#"):
            break
    suffix_start = len(lines)
    for i in range(len(lines) - 1, prefix_end - 1, -1):
        stripped = lines[i].strip()
        if stripped == "...":
            suffix_start = i
            break
        if stripped and not stripped.startswith("#"):
            break
    prefix, suffix = "".join(lines[:prefix_end]), "".join(lines[suffix_start:])
    return prefix, "".join(lines[prefix_end:suffix_start]), suffix


class _Representer(RoundTripRepresenter):
    """Writes null the way the loaded file did (ruamel forgets: ``null``, ``~`` or empty)."""

    null_text = ""

    def represent_none(self, data: None) -> Any:
        if not self.null_text:
            return super().represent_none(data)
        return self.represent_scalar("tag:yaml.org,2002:null", self.null_text)


_Representer.add_representer(type(None), _Representer.represent_none)


def _null_style(text: str) -> str:
    """How the file writes null: the most used of ``null``/``~``/empty (empty if none)."""
    styles: Counter[str] = Counter()
    for event in YAML(typ="safe", pure=True).parse(text):
        if isinstance(event, events.ScalarEvent) and event.style is None and event.implicit[0]:
            if event.value in ("", "~", "null", "Null", "NULL"):
                styles[event.value] += 1
    return styles.most_common(1)[0][0] if styles else ""


def load(text: str) -> CommentedMap:
    """Load text already checked by `yamlio.parse_yaml`; ScenarioInvalid if not a mapping."""
    prefix, body, suffix = _split_markers(text)
    doc = _roundtrip_yaml().load(body)
    if not isinstance(doc, CommentedMap):
        problem = Problem("schema.invalid", "A scenario file is a mapping (id, name, steps, ...).")
        raise ScenarioInvalid([problem])
    # kept on the document itself so a dump restores them without another argument
    setattr(doc, _MARKERS, (prefix, suffix, _null_style(text)))  # not a declared attribute
    return doc


def dump(doc: CommentedMap) -> str:
    """Write a document from `load` back to text, in the house layout."""
    prefix, suffix, null_text = getattr(doc, _MARKERS, ("", "", ""))
    yaml = _roundtrip_yaml()
    yaml.Representer = _Representer
    yaml.representer.null_text = null_text
    out = io.StringIO()
    yaml.dump(doc, out)
    return str(prefix) + out.getvalue() + str(suffix)


def set_in(doc: CommentedMap, path: Path, value: Any) -> None:
    """Set one value in place (creating the last key if needed); quoting style is kept."""
    if not path:
        raise KeyError("set_in needs a non-empty path")
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if isinstance(parent, list) and isinstance(last, int):
        old = parent[last]
    elif isinstance(parent, dict):
        old = parent.get(last)
    else:
        raise KeyError(f"{'.'.join(map(str, path))}: no such place in the document")
    if isinstance(old, ScalarString) and isinstance(value, str):
        value = type(old)(value)  # 'quoted' stays 'quoted'
    parent[last] = value
