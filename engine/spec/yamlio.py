"""Safe YAML for scenarios, the policy and the channels file: parsing with limits and positions,
and a comment-keeping round trip.

`parse_yaml` turns untrusted text into plain Python data (dict, list, str, int, float, bool, None)
plus the 1-based line and column of every key and value, or raises ScenarioInvalid. It checks the
event stream before building anything, so a hostile file costs at most the limits below: no
anchors or aliases, no tags beyond the YAML core ones, bounded size, depth and node count.
YAML 1.2 rules apply: ``yes``/``no``/``on``/``off`` are text, ``09:00`` is text; dates stay text.

`load_roundtrip`/`dump_roundtrip`/`set_in` (implemented in `engine.spec.roundtrip`) are for
tools that edit a scenario file (the designer, upgrades). For files in the house layout the round
trip is exact, comments and key order included::

    # comments anywhere, blank lines kept
    ---                          # optional, with comments before it
    id: welcome                  # mappings indented by 2 spaces
    triggers:
      - event: signed_up         # lists indented under their key: two spaces, dash, space
        where: [{property: plan, op: eq, value: pro}]  # flow style kept as written
    steps:
      wait-1d:
        type: wait
        duration: 1d
        next: null               # null written one way per file: null, ~ or empty
      note:
        type: send
        content:
          text: |                # block scalars, quotes ('x', "x") kept
            Hello {{ contact.first_name }}

LF line ends, a final newline, no trailing spaces, one space after ``key:``, booleans written
``true``/``false``, lists of lists in flow style. Files outside that layout load fine but are
rewritten into it by the first edit.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from functools import lru_cache
from typing import Any

# libyaml through PyYAML reads the events ten times faster than ruamel's pure Python; PyYAML's
# wheels carry it (a build without it falls back to PyYAML's own Python parser).
import yaml as pyyaml
from ruamel.yaml import YAML, nodes
from ruamel.yaml.comments import CommentedMap
from yaml import events
from yaml.error import MarkedYAMLError, YAMLError
from yaml.reader import ReaderError

from engine.errors import NotFound, ScenarioInvalid
from engine.spec import roundtrip
from engine.spec.problems import Problem

_LIBYAML = bool(getattr(pyyaml, "__with_libyaml__", False))

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_NODES = 10_000
UTF16_HINT = "the file looks like UTF-16: save it as UTF-8"
CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")
) | {"!"}

Path = tuple[str | int, ...]
Mark = tuple[int, int]


@dataclass(frozen=True)
class Positions:
    """Where each key and value of a parsed document starts (1-based line, column)."""

    keys: Mapping[Path, Mark] = field(default_factory=dict)
    values: Mapping[Path, Mark] = field(default_factory=dict)

    def locate(self, path: Path, prefer_key: bool = False) -> Mark | None:
        """Position for a problem at `path`: its value (or key), else the nearest ancestor's key."""
        first, second = (self.keys, self.values) if prefer_key else (self.values, self.keys)
        found = first.get(path) or second.get(path)
        if found:
            return found
        for cut in range(len(path) - 1, -1, -1):
            # a missing field is best shown on its parent's key line (the value starts below)
            ancestor = path[:cut]
            found = self.keys.get(ancestor) or self.values.get(ancestor)
            if found:
                return found
        return None


def _problem(code: str, message: str, filename: str | None, mark: Mark | None) -> Problem:
    line, column = mark if mark else (None, None)
    return Problem(code, message, file=filename, line=line, column=column)


def _index_mark(text: str, index: int) -> Mark:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def _check_text(text: str, filename: str | None) -> list[Problem]:
    nul = text.find("\x00")
    if nul >= 0:
        mark = _index_mark(text, nul)
        problem = _problem("yaml.encoding", "NUL byte in the file.", filename, mark)
        if text.count("\x00") * 3 >= len(text):  # every other byte: UTF-16 without its BOM
            problem = replace(problem, hint=UTF16_HINT)
        return [problem]
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        mark = _index_mark(text, exc.start)
        return [_problem("yaml.encoding", "The file is not valid UTF-8.", filename, mark)]
    if size > MAX_BYTES:
        message = f"The file is {size:,} bytes; the limit is {MAX_BYTES:,} bytes."
        return [_problem("yaml.limit", message, filename, None)]
    return []


def _event_mark(event: events.Event) -> Mark:
    return event.start_mark.line + 1, event.start_mark.column + 1


_SKIP = object()  # the value of a key that was refused: its events are checked, not built


class _Builder:
    """Builds plain data from the event stream in one pass: the limits checked on every event
    before anything is built from it, positions and duplicate keys recorded, scalars read by
    ruamel's YAML 1.2 rules (``yes`` and ``09:00`` are text)."""

    def __init__(self, filename: str | None) -> None:
        self.filename = filename
        self.keys: dict[Path, Mark] = {}
        self.values: dict[Path, Mark] = {}
        self.problems: list[Problem] = []  # duplicate keys, keys that are not text, bad scalars
        self.tags: list[Problem] = []  # tags beyond the core ones: reported alone, as a scan

    def run(self, stream: Iterable[events.Event]) -> Any:
        """The document's data; ScenarioInvalid at the first breach of a limit."""
        depth = count = documents = 0
        root: Any = None
        # one frame per open collection: [container, path, pending key (None, a key, _SKIP)]
        frames: list[list[Any]] = []
        for event in stream:
            kind = type(event)
            if kind is events.MappingEndEvent or kind is events.SequenceEndEvent:
                depth -= 1
                frames.pop()
                continue
            if kind is events.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    message = "Only one YAML document per file (remove the second '---')."
                    self._breach("yaml.syntax", message, event)
            if kind is events.AliasEvent:
                self._breach(
                    "yaml.alias",
                    f"Aliases (*{event.anchor}) are not allowed; repeat the value.",
                    event,
                )
            if not isinstance(event, events.NodeEvent):
                continue
            if event.anchor is not None:
                message = f"Anchors (&{event.anchor}) are not allowed; repeat the value."
                self._breach("yaml.alias", message, event)
            tag = event.tag
            if tag is not None and str(tag) not in CORE_TAGS:
                message = f"Tag '{tag}' is not allowed; only plain YAML values are."
                self.tags.append(_problem("yaml.tag", message, self.filename, _event_mark(event)))
            count += 1
            if count > MAX_NODES:
                self._breach(
                    "yaml.limit", f"More than {MAX_NODES:,} values; split the file.", event
                )
            opens = kind is events.MappingStartEvent or kind is events.SequenceStartEvent
            if opens:
                depth += 1
                if depth > MAX_DEPTH:
                    self._breach("yaml.limit", f"Nesting deeper than {MAX_DEPTH} levels.", event)
            value, path = self._node(event, frames)
            if not frames:
                root = value
            if opens:
                frames.append([value, path, None])
        return root

    def _breach(self, code: str, message: str, event: events.Event) -> None:
        raise ScenarioInvalid([_problem(code, message, self.filename, _event_mark(event))])

    def _node(self, event: events.NodeEvent, frames: list[list[Any]]) -> tuple[Any, Path]:
        """Place one node in its parent: the value (the new container, or _SKIP when refused)
        and its path."""
        mark = _event_mark(event)
        if frames:
            parent, path, pending = frames[-1]
            if parent is _SKIP:
                return _SKIP, path
            if isinstance(parent, dict) and pending is None:  # a key
                frames[-1][2] = self._key(event, parent, path, mark)
                return _SKIP, path  # a key that is a collection is refused, with its contents
            if isinstance(parent, dict):
                frames[-1][2] = None
                if pending is _SKIP:
                    return _SKIP, path
                here = (*path, pending)
            else:
                here = (*path, len(parent))
        else:
            parent, here = None, ()
        self.values[here] = mark
        if isinstance(event, events.MappingStartEvent):
            value: Any = {}
        elif isinstance(event, events.SequenceStartEvent):
            value = []
        else:
            value = self._scalar(event, mark)
        if isinstance(parent, dict):
            parent[here[-1]] = value
        elif parent is not None:
            parent.append(value)
        return value, here

    def _key(self, event: events.NodeEvent, parent: dict[str, Any], path: Path, mark: Mark) -> Any:
        if not isinstance(event, events.ScalarEvent):
            message = "Keys must be plain text, not lists or mappings."
            self.problems.append(_problem("yaml.key", message, self.filename, mark))
            return _SKIP
        key = str(event.value)
        if key in parent:
            first = self.keys[(*path, key)][0]
            message = f"Duplicate key '{key}' (first on line {first}, again on {mark[0]})."
            problem = _problem("yaml.duplicate_key", message, self.filename, mark)
            lines: dict[str, object] = {"lines": [first, mark[0]]}
            self.problems.append(replace(problem, path=(*path, key), extra=lines))
            return _SKIP
        self.keys[(*path, key)] = mark
        parent[key] = None  # holds the key's place (and catches a repeat before its value)
        return key

    def _scalar(self, event: events.ScalarEvent, mark: Mark) -> Any:
        tag = event.tag
        value = _read_scalar(None if tag is None else str(tag), event.value, event.implicit)
        if value is _BAD:
            read_as = str(tag).rsplit(":", 1)[-1]
            message = f"'{event.value}' cannot be read as {read_as}."
            self.problems.append(_problem("yaml.tag", message, self.filename, mark))
            return None
        return value


_BAD = object()  # a scalar its tag cannot read
_SAFE = YAML(typ="safe", pure=True)


@lru_cache(maxsize=65_536)  # the same words come back in every file: type, next, email...
def _read_scalar(tag: str | None, text: str, implicit: tuple[bool, bool]) -> Any:
    """A scalar's value by ruamel's YAML 1.2 rules (``yes`` and ``09:00`` are text), or _BAD."""
    if tag is None or tag == "!":
        tag = str(_SAFE.resolver.resolve(nodes.ScalarNode, text, implicit))
    node = nodes.ScalarNode(tag, text)
    constructor = _SAFE.constructor
    try:
        value = constructor.construct_object(node, deep=True)
    except Exception:  # e.g. `!!bool maybe`: ruamel raises KeyError, ValueError...
        return _BAD
    finally:
        constructor.constructed_objects.pop(node, None)
    if isinstance(value, date):
        return text  # dates stay text, as written; fields parse what they need
    return value


def _syntax_problem(exc: YAMLError, text: str, filename: str | None) -> Problem:
    if isinstance(exc, ReaderError):
        index = exc.position
        if index is not None and _LIBYAML:  # libyaml counts the offset in UTF-8 bytes
            index = len(text.encode("utf-8")[:index].decode("utf-8", "ignore"))
        mark = _index_mark(text, index) if index is not None else None
        char = (
            exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or " ")
        )
        message = f"Character U+{char:04X} is not allowed in YAML."
        return _problem("yaml.encoding", message, filename, mark)
    if isinstance(exc, MarkedYAMLError) and "nesting depth" in str(exc.problem):
        # libyaml stops at its own depth (1,000) while scanning ahead, before our limit is seen
        message = f"Nesting deeper than {MAX_DEPTH} levels."
        return _problem("yaml.limit", message, filename, (exc.problem_mark.line + 1, 1))
    if isinstance(exc, MarkedYAMLError):
        where = exc.problem_mark or exc.context_mark
        mark = (where.line + 1, where.column + 1) if where is not None else None
        message = str(exc.problem or exc)
        if exc.context and exc.context_mark is not None:
            message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        return _problem("yaml.syntax", message[:1].upper() + message[1:] + ".", filename, mark)
    return _problem("yaml.syntax", f"YAML error: {exc}", filename, None)


def _events(text: str) -> Iterable[events.Event]:
    loader = pyyaml.CSafeLoader if _LIBYAML else pyyaml.SafeLoader
    return pyyaml.parse(text, Loader=loader)  # type: ignore[no-any-return]


def parse_yaml(text: str, filename: str | None = None) -> tuple[Any, Positions]:
    """Parse untrusted scenario text into plain data and positions; raise ScenarioInvalid.

    The text is read into events (by libyaml), each checked against the
    limits before the builder places it: one pass."""
    if text.startswith("\ufeff"):
        text = text[1:]
    problems = _check_text(text, filename)
    if problems:
        raise ScenarioInvalid(problems)
    builder = _Builder(filename)
    try:
        data = builder.run(_events(text))
    except ScenarioInvalid:
        raise
    except YAMLError as exc:
        raise ScenarioInvalid([_syntax_problem(exc, text, filename)]) from None
    except Exception as exc:  # untrusted input through a third-party parser: never a traceback
        message = f"The file could not be read as YAML ({type(exc).__name__})."
        raise ScenarioInvalid([_problem("yaml.syntax", message, filename, None)]) from None
    if builder.tags:
        raise ScenarioInvalid(builder.tags)
    if builder.problems:
        raise ScenarioInvalid(builder.problems)
    return data, Positions(builder.keys, builder.values)


def decode_source(raw: bytes, filename: str | None = None) -> str:
    """Decode a YAML file's bytes as UTF-8 (a BOM is accepted); raise ScenarioInvalid."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        mark = (raw[: exc.start].count(b"\n") + 1, exc.start - raw.rfind(b"\n", 0, exc.start))
        problem = _problem("yaml.encoding", "The file is not valid UTF-8.", filename, mark)
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            problem = replace(problem, hint=UTF16_HINT)
        raise ScenarioInvalid([problem]) from None


def place(problems: Iterable[Problem], positions: Positions, filename: str | None) -> list[Problem]:
    """Give each problem its file and line, and sort by line (unplaced ones last)."""
    placed = []
    for p in problems:
        if p.line is None:
            mark = positions.locate(p.path, prefer_key=p.extra.get("at") == "key")
            if mark:
                p = replace(p, line=mark[0], column=mark[1])
        placed.append(replace(p, file=p.file or filename))
    return sorted(placed, key=lambda p: (p.line is None, p.line or 0, p.column or 0))


def at_file_start(problems: list[Problem]) -> list[Problem]:
    """Problems no part of the document locates (an empty file's missing field) shown at 1:1,
    so every line of a lint report carries file:line:col."""
    return [p if p.line is not None else replace(p, line=1, column=1) for p in problems]


def read_source(path: pathlib.Path, what: str = "file") -> str:
    """The text of a YAML file: NotFound when missing, ScenarioInvalid (located) when it cannot
    be read, is over MAX_BYTES or is not UTF-8. Reads at most the limit, whatever the file's size.
    """
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 4)  # a BOM plus one byte over: enough to see the limit
    except FileNotFoundError:
        raise NotFound(f"{what} {path} does not exist") from None
    except OSError as exc:
        message = f"Cannot read the file: {exc.strerror}"
        raise ScenarioInvalid([Problem("file.unreadable", message, file=str(path))]) from None
    if len(raw) > MAX_BYTES + 3:
        # shown where the limit is crossed, so an editor jumps to the part to move out
        over = raw[:MAX_BYTES]
        mark = (over.count(b"\n") + 1, MAX_BYTES - over.rfind(b"\n"))
        message = f"The file is over {MAX_BYTES:,} bytes, the limit for a {what}."
        raise ScenarioInvalid([_problem("yaml.limit", message, str(path), mark)])
    return decode_source(raw, str(path))


# ------------------------------------------------------------------ round trip


def load_roundtrip(text: str) -> CommentedMap:
    """Load a scenario for editing, keeping comments, order and quotes; raise ScenarioInvalid."""
    parse_yaml(text)  # the same limits as the engine's parser, before ruamel builds anything
    return roundtrip.load(text)


def dump_roundtrip(doc: CommentedMap) -> str:
    """Write a document from `load_roundtrip` back to text, in the house layout."""
    return roundtrip.dump(doc)


set_in = roundtrip.set_in


def apply_text(base_text: str, data: Mapping[str, Any]) -> str:
    """`base_text` with `data` merged in (see `merge`); ScenarioInvalid if it does not parse."""
    doc = load_roundtrip(base_text)
    roundtrip.merge(doc, data)
    return roundtrip.dump(doc)
