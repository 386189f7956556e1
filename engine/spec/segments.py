"""Segments as code: one YAML file per segment in ``segments/`` beside the scenarios, named
after its id. A segment says who is in by exactly one of::

    condition: {...}            # the condition language; {segment: other-id} composes segments
    manual: {source: vip.csv}   # a list of contacts imported from a CSV beside the file
    manual: {}                  # a list whose members are imported later

Read like scenarios: safe YAML (yamlio), structure (marshmallow), every problem at file:line:col.
Across a folder: duplicate ids, references to unknown segments and cycles between segments.
Membership itself (who is in now) is stored and kept by engine.audience; this is the language.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from engine.errors import NotFound, ScenarioInvalid
from engine.spec.conditions import Condition, condition_form, segment_names
from engine.spec.fields import ConditionField, Identifier
from engine.spec.graph import KEY
from engine.spec.problems import Problem, did_you_mean, has_errors
from engine.spec.schema import FORMAT_VERSION
from engine.spec.schema_problems import child_node, schema_problems
from engine.spec.yamlio import Positions, at_file_start, parse_yaml, place, read_source

SEGMENTS_FOLDER = "segments"
SUFFIXES = (".yaml", ".yml")
MANUAL_SOURCE = re.compile(r"^\w[\w.-]*\.csv$")  # a file name in the segments folder
CONTACT_COLUMN = "external_id"
HEADER_BYTES = 64 * 1024  # lint reads the CSV's header line only; the import reads the rows
Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Segment:
    """A validated segment definition. Immutable; membership lives in the database."""

    id: str
    name: str
    format_version: int
    description: str = ""
    condition: Condition | None = None  # None: a manual segment
    manual_source: str | None = None  # the CSV its members are imported from, if named
    references: frozenset[str] = frozenset()  # segments its condition tests membership of

    @property
    def is_manual(self) -> bool:
        return self.condition is None


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class ManualSchema(_Strict):
    source = fields.String(
        load_default=None,
        validate=validate.Regexp(
            MANUAL_SOURCE, error="Expected a CSV file name beside the segment, e.g. vip-list.csv."
        ),
        metadata={"help": "CSV file (external_id column) beside the segment file."},
    )


class SegmentSchema(_Strict):
    format_version = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Equal(
            FORMAT_VERSION, error=f"This Parcours reads format_version {FORMAT_VERSION}."
        ),
    )
    id = Identifier(required=True, metadata={"help": "The file name without .yaml."})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="")
    condition = ConditionField(load_default=None, metadata={"help": "Who is in."})
    manual = fields.Nested(
        ManualSchema, load_default=None, metadata={"help": "Members imported from a list."}
    )


@dataclass
class SegmentLint:
    """Everything one lint learned about a segment text."""

    segment: Segment | None  # None when there is an error
    problems: list[Problem]
    data: Any = None
    positions: Positions = field(default_factory=Positions)


def _definition_problems(data: Mapping[str, Any]) -> list[Problem]:
    # an empty `condition:` says nothing about who is in; an empty `manual:` is a list
    has_condition = data.get("condition") is not None
    if has_condition and "manual" in data:
        message = "A segment has a condition or a manual list, not both."
        hint = "keep the condition, or the manual list"
        return [Problem("segment.definition", message, ("manual",), hint=hint, extra=dict(KEY))]
    if not has_condition and "manual" not in data:
        message = "A segment needs a condition or a manual list."
        hint = "add condition: {...}, or manual: {source: FILE.csv}"
        return [Problem("segment.definition", message, hint=hint)]
    return []


def _filename_problem(data: Mapping[str, Any], filename: str | None) -> list[Problem]:
    segment_id = data.get("id")
    if not filename or not isinstance(segment_id, str) or Path(filename).stem == segment_id:
        return []
    # scenarios find a segment by its file name, so a mismatch is an error, not a warning
    message = f"The file is named '{Path(filename).name}' but the segment id is '{segment_id}'."
    hint = f"rename the file to {segment_id}{Path(filename).suffix or '.yaml'}"
    return [Problem("segment.filename", message, ("id",), hint=hint)]


def _csv_problem(folder: Path, source: str) -> Problem | None:
    path = folder / source
    at: Path_ = ("manual", "source")
    try:
        with path.open("rb") as handle:
            first = handle.read(HEADER_BYTES).split(b"\n", 1)[0]
        header = next(csv.reader(io.StringIO(first.decode("utf-8-sig"))), [])
    except FileNotFoundError:
        message = f"No file '{source}' beside the segment file."
        hint = "put the CSV there, or write manual: {} and import the members later"
        return Problem("segment.manual_source", message, at, hint=hint)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        message = f"The manual list '{source}' cannot be read as UTF-8 CSV ({exc})."
        return Problem("segment.manual_source", message, at)
    if CONTACT_COLUMN in (column.strip() for column in header):
        return None
    message = f"The manual list '{source}' has no {CONTACT_COLUMN} column."
    hint = f"its first line names the columns ({', '.join(header) or 'none'}); add {CONTACT_COLUMN}"
    return Problem("segment.manual_source", message, at, hint=hint)


def lint_segment_text(
    text: str, filename: str | None = None, folder: Path | None = None
) -> SegmentLint:
    """Check a segment text; with `folder` (where the file lives), also its manual CSV."""
    try:
        data, positions = parse_yaml(text, filename)
    except ScenarioInvalid as exc:
        return SegmentLint(None, at_file_start(place(exc.problems, Positions(), filename)))
    if not isinstance(data, Mapping):
        message = "A segment file is a mapping (id, name, condition or manual)."
        problem = Problem("schema.invalid", message, file=filename, line=1, column=1)
        return SegmentLint(None, [problem], data, positions)
    problems = _filename_problem(data, filename) + _definition_problems(data)
    loaded: dict[str, Any] | None = None
    try:
        loaded = SegmentSchema().load(data)
    except ValidationError as exc:
        problems += schema_problems(exc, data, SegmentSchema())
    if loaded is not None and folder is not None and loaded["manual"] is not None:
        source = loaded["manual"]["source"]
        found = _csv_problem(folder, source) if source else None
        problems += [found] if found else []
    placed = at_file_start(place(problems, positions, filename))
    if loaded is None or has_errors(placed):
        return SegmentLint(None, placed, data, positions)
    condition = loaded["condition"]
    segment = Segment(
        id=loaded["id"],
        name=loaded["name"],
        format_version=loaded["format_version"],
        description=loaded["description"],
        condition=condition,
        manual_source=loaded["manual"]["source"] if loaded["manual"] else None,
        references=frozenset(segment_names(condition)) if condition else frozenset(),
    )
    return SegmentLint(segment, placed, data, positions)


def load_segment_text(text: str, filename: str | None = None) -> Segment:
    """The Segment, or ScenarioInvalid listing every error."""
    result = lint_segment_text(text, filename)
    if result.segment is None:
        raise ScenarioInvalid([p for p in result.problems if p.severity == "error"])
    return result.segment


# ------------------------------------------------------------------ references


def _condition_references(raw: Any, path: Path_) -> Iterator[tuple[str, Path_]]:
    form = condition_form(raw)
    if form in ("all", "any") and isinstance(raw[form], list):
        for i, item in enumerate(raw[form]):
            yield from _condition_references(item, (*path, form, i))
    elif form == "not":
        yield from _condition_references(raw["not"], (*path, "not"))
    elif form == "segment" and isinstance(raw["segment"], str):
        yield raw["segment"], (*path, "segment")


def segment_references(data: Any, root: Schema) -> list[tuple[str, Path_]]:
    """(segment id, document path) of every segment a document names: `{segment: ID}`
    conditions and the fields marked as segment references (triggers, exit rules).

    Follows the document's schema, so text in `data:` or a message is never taken for one."""
    found: list[tuple[str, Path_]] = []

    def walk(node: Schema | fields.Field[Any], raw: Any, path: Path_) -> None:
        if isinstance(node, ConditionField):
            found.extend(_condition_references(raw, path))
            return
        if isinstance(node, fields.Field) and node.metadata.get("segment"):
            if isinstance(raw, str):
                found.append((raw, path))
            return
        children: Iterable[tuple[str | int, Any]] = ()
        if isinstance(raw, Mapping):
            children = raw.items()
        elif isinstance(raw, list):
            children = enumerate(raw)
        for part, child in children:
            sub = child_node(node, raw, part)
            if sub is not None:
                walk(sub, child, (*path, part))

    walk(root, data, ())
    return found


def _is_id(text: str) -> bool:
    # an id the schema refuses is reported there, not again as an unknown segment
    return bool(text[:1].isalnum() and all(c.isalnum() or c in "_-" for c in text))


def unknown_segment_problems(
    references: list[tuple[str, Path_]], known: Collection[str]
) -> list[Problem]:
    """A problem per reference to a segment that is not among `known`."""
    problems = []
    for segment_id, path in references:
        if segment_id in known or not _is_id(segment_id):
            continue
        hint = did_you_mean(segment_id, known) or (
            f"segments are: {', '.join(sorted(known))}"
            if known
            else f"no segments are defined in {SEGMENTS_FOLDER}/ beside the scenarios"
        )
        message = f"No segment with id '{segment_id}' in {SEGMENTS_FOLDER}/."
        step = str(path[1]) if len(path) > 1 and path[0] == "steps" else None
        problems.append(Problem("segment.unknown", message, path, step=step, hint=hint))
    return problems


def segment_ids(folder: Path) -> list[str]:
    """The segment ids a folder of segment files defines (their file names)."""
    return [p.stem for p in segment_files(folder)]


def segment_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


# ------------------------------------------------------------------ a folder


@dataclass
class SegmentFolder:
    """The segments of a folder that loaded, and every problem of its files."""

    segments: dict[str, Segment]
    problems: list[Problem]
    files: list[Path]


def _lint_file(path: Path) -> SegmentLint:
    try:
        text = read_source(path, "segment file")
    except NotFound:
        return SegmentLint(None, [Problem("file.missing", "No such file.", file=str(path))])
    except ScenarioInvalid as exc:
        return SegmentLint(None, exc.problems)
    return lint_segment_text(text, str(path), path.parent)


def _cycle_problems(
    edges: list[tuple[str, str, Path, Path_, Positions]],
) -> list[Problem]:
    graph = nx.DiGraph()
    for source, target, file, path, positions in edges:
        if not graph.has_edge(source, target):
            graph.add_edge(source, target, where=(file, path, positions))
    problems = []
    # each cycle once, from its smallest id; a handful is enough to see what to untangle
    for cycle in itertools.islice(nx.simple_cycles(graph), 20):
        start = cycle.index(min(cycle))
        cycle = cycle[start:] + cycle[:start]
        file, path, positions = graph.edges[cycle[0], cycle[1 % len(cycle)]]["where"]
        names = " → ".join([*cycle, cycle[0]])
        message = f"Segments refer to each other in a cycle: {names}."
        hint = "a segment cannot contain itself; remove one of the references"
        problem = Problem("segment.cycle", message, path, hint=hint)
        problems += place([problem], positions, str(file))
    return problems


def lint_segment_folder(folder: Path) -> SegmentFolder:
    """Lint every segment file of `folder`, then duplicate ids, references and cycles."""
    files = segment_files(folder)
    results = [(file, _lint_file(file)) for file in files]
    problems = [p for _, result in results for p in result.problems]
    owners: dict[str, Path] = {}
    for file, result in results:
        segment_id = result.data.get("id") if isinstance(result.data, Mapping) else None
        if not isinstance(segment_id, str):
            continue
        if segment_id in owners:
            message = f"Segment id '{segment_id}' is also used by {owners[segment_id]}."
            found = Problem("segment.duplicate_id", message, ("id",), hint="give each its own id")
            problems += place([found], result.positions, str(file))
        else:
            owners[segment_id] = file
    known = list(owners)
    edges = []
    for file, result in results:
        references = segment_references(result.data, SegmentSchema())
        problems += place(unknown_segment_problems(references, known), result.positions, str(file))
        source = result.data.get("id") if isinstance(result.data, Mapping) else None
        if isinstance(source, str) and owners.get(source) == file:
            edges += [(source, t, file, p, result.positions) for t, p in references if t in known]
    problems += _cycle_problems(edges)
    segments = {r.segment.id: r.segment for _, r in results if r.segment is not None}
    problems.sort(key=lambda p: (p.file or "", p.line is None, p.line or 0, p.column or 0))
    return SegmentFolder(segments, problems, files)


def load_segments(folder: Path | str) -> dict[str, Segment]:
    """Every segment of a folder by id, or ScenarioInvalid listing every error of the folder."""
    result = lint_segment_folder(Path(folder))
    errors = [p for p in result.problems if p.severity == "error"]
    if errors:
        raise ScenarioInvalid(errors)
    return result.segments
