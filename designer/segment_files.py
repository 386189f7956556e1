"""The segment files the designer reads and writes, `segments/<id>.yaml` beside the scenarios,
and a draft's lint: the file's own checks and, against the folder's other segments, unknown
references and cycles, as `parcours lint` reports them.

Writes are atomic and refused when the file changed on disk since it was loaded, like journeys.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from designer import parcours
from designer.workspace import SCENARIO_ID, Conflict, text_hash, write_atomically
from engine.errors import NotFound, ScenarioInvalid
from engine.spec.problems import Problem
from engine.spec.segments import (
    SEGMENTS_FOLDER,
    SUFFIXES,
    Segment,
    SegmentSchema,
    lint_segment_folder,
    lint_segment_text,
    segment_ids,
    segment_references,
    unknown_segment_problems,
)
from engine.spec.yamlio import place, read_source

# ------------------------------------------------------------------ files


def folder() -> Path:
    return Path(parcours().settings.scenarios_dir) / SEGMENTS_FOLDER


def path_for(segment_id: str) -> Path:
    """The file of a segment id; NotFound for an id that cannot be a file name here."""
    if not SCENARIO_ID.match(segment_id):
        raise NotFound(f"no segment '{segment_id}'")
    for suffix in SUFFIXES:
        candidate = folder() / f"{segment_id}{suffix}"
        if candidate.is_file():
            return candidate
    return folder() / f"{segment_id}.yaml"


def write(segment_id: str, text: str, expected_hash: str | None) -> None:
    """Replace the file atomically; Conflict unless its text is still `expected_hash` (None: the
    file must not exist yet)."""
    path = path_for(segment_id)
    try:
        current: str | None = read_source(path, "segment file")
    except NotFound:
        current = None
    except ScenarioInvalid as exc:  # unreadable on disk: never replaced from here
        raise Conflict(str(path)) from exc
    if (current is None) != (expected_hash is None) or (
        current is not None and text_hash(current) != expected_hash
    ):
        raise Conflict(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)


def segment_names() -> dict[str, str]:
    """Each segment file's name (its id when the file does not say or does not read)."""
    names = {}
    for file, data in files():
        name = data.get("name") if isinstance(data, Mapping) else None
        names[file.stem] = name if isinstance(name, str) and name else file.stem
    return names


def files() -> Iterator[tuple[Path, Any]]:
    for segment_id in segment_ids(folder()):
        path = path_for(segment_id)
        try:
            yield path, lint_segment_text(read_source(path, "segment file")).data
        except (NotFound, ScenarioInvalid):
            yield path, None


# ------------------------------------------------------------------ a draft, linted


@dataclass
class Draft:
    """A segment text as the page holds it, with every problem a lint of the folder finds."""

    text: str
    problems: list[Problem]
    data: Any = None
    segment: Segment | None = None
    errors: int = field(init=False)

    def __post_init__(self) -> None:
        self.errors = sum(1 for p in self.problems if p.severity == "error")


def _cycle(segment_id: str, target: str, others: Mapping[str, Segment]) -> list[str] | None:
    """The chain target → … → segment_id through the other segments' references, if any."""
    graph = nx.DiGraph([(s.id, r) for s in others.values() for r in s.references])
    if target == segment_id:
        return [segment_id, segment_id]
    if target not in graph or segment_id not in graph:
        return None
    try:
        return [segment_id, *nx.shortest_path(graph, target, segment_id)]
    except nx.NetworkXNoPath:
        return None


def lint_draft(segment_id: str, text: str) -> Draft:
    """Lint `text` as the file of `segment_id`, against the folder's other segments."""
    path = path_for(segment_id)
    result = lint_segment_text(text, str(path), path.parent)
    problems = list(result.problems)
    if isinstance(result.data, Mapping):
        on_disk = lint_segment_folder(path.parent).segments
        others = {k: v for k, v in on_disk.items() if k != segment_id}
        references = segment_references(result.data, SegmentSchema())
        known = {*segment_ids(path.parent), segment_id}
        found = unknown_segment_problems(references, known)
        for target, at in references:
            chain = _cycle(segment_id, target, others) if target in known else None
            if chain:
                message = f"Segments refer to each other in a cycle: {' → '.join(chain)}."
                hint = "a segment cannot contain itself; remove one of the references"
                found.append(Problem("segment.cycle", message, at, hint=hint))
        problems += place(found, result.positions, str(path))
    segment = result.segment if not any(p.severity == "error" for p in problems) else None
    return Draft(text, problems, result.data, segment)


def definition(data: Any) -> Any:
    """What decides membership in a segment text: its condition or manual list."""
    if not isinstance(data, Mapping):
        return None
    return {"condition": data.get("condition"), "manual": data.get("manual")}
