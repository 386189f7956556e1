"""The comment-keeping round trip behind `yamlio.load_roundtrip` (house layout: see yamlio)."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping
from datetime import date
from typing import Any

from ruamel.yaml import YAML, events
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import LiteralScalarString, PlainScalarString, ScalarString

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


# ------------------------------------------------------------------ merging edited data


def _same(old: Any, new: Any) -> bool:
    """Equal as YAML values: ``1`` is not ``true``, and a date ruamel built equals its text."""
    if isinstance(old, date) and isinstance(new, str):
        return old.isoformat() == new
    if isinstance(old, bool) != isinstance(new, bool) or isinstance(old, str) != isinstance(
        new, str
    ):
        return False
    return bool(old == new)


def _fresh(value: Any) -> Any:
    """A new value in the house layout: short lists in flow style, multi-line text as a block."""
    if isinstance(value, Mapping):
        out = CommentedMap()
        for key, item in value.items():
            out[key] = _fresh(item)
        return out
    if isinstance(value, list | tuple):
        seq = CommentedSeq(_fresh(item) for item in value)
        if all(not isinstance(item, Mapping | list | tuple) for item in value):
            seq.fa.set_flow_style()  # [mon, fri], positions [120, 80]
        return seq
    if isinstance(value, str) and "\n" in value.rstrip("\n"):
        return LiteralScalarString(value)
    return value


def _merged(old: Any, new: Any) -> Any:
    """`new` written over `old`: `old` itself when equal or merged in place, else a new value."""
    if isinstance(old, CommentedMap) and isinstance(new, Mapping):
        _merge_map(old, new)
        return old
    if isinstance(old, CommentedSeq) and isinstance(new, list | tuple):
        if len(old) != len(new):
            seq = _fresh(new)
            if isinstance(seq, CommentedSeq) and old.fa.flow_style() and old:
                seq.fa.set_flow_style()  # written inline by its author: stays inline
            return seq
        for i, item in enumerate(new):
            merged = _merged(old[i], item)
            if merged is not old[i]:
                old[i] = merged
        return old
    if isinstance(old, CommentedMap | CommentedSeq) or isinstance(new, Mapping | list | tuple):
        return _fresh(new)
    if _same(old, new):
        return old
    if isinstance(old, ScalarString) and old and isinstance(new, str):
        return type(old)(new)  # 'quoted' stays 'quoted', a | block stays a block
    if isinstance(old, ScalarString) and isinstance(new, str):
        return PlainScalarString(new)  # '' was quoted only because it is empty
    return _fresh(new)


def _merge_map(target: CommentedMap, data: Mapping[str, Any]) -> None:
    for key in [k for k in target if k not in data]:
        del target[key]
    previous: Any = None
    for key, value in data.items():
        if key in target:
            merged = _merged(target[key], value)
            if merged is not target[key]:
                target[key] = merged
        else:
            # after the key that precedes it in `data`: a renamed step keeps its place
            pos = list(target).index(previous) + 1 if previous in target else 0
            if not target and isinstance(value, Mapping | list | tuple):
                target.fa.set_block_style()  # `steps: {}` grows into a block
            target.insert(pos, key, _fresh(value))
        previous = key


def merge(doc: CommentedMap, data: Mapping[str, Any]) -> None:
    """Write plain `data` over a round-trip document, changing as little text as possible.

    Equal values are left alone (quotes and comments kept); changed scalars are replaced in
    their old style; new keys go after the key that precedes them in `data`; missing keys are
    deleted; lists are merged item by item when the length is the same, else replaced.
    """
    _merge_map(doc, data)
