"""The segments the worker keeps: the usable definitions of a folder, what data each reads, the
event windows its clock follows, and the reference order rebuilds go in.

The folder is read again only when its files change (names, sizes, modification times); a
segment with errors is left out and its problems logged once, the others go on. A segment that
composes a left-out one (or sits in a cycle) is left out too: its members cannot be computed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import networkx as nx

from engine.audience.changes import CONSENT, EVENT, METRICS, PRESSURE, PROFILE, event_kind
from engine.spec.conditions import (
    All,
    Any_,
    AttributeTest,
    Condition,
    ConsentTest,
    EventTest,
    Expression,
    Not,
    PressureTest,
    TagTest,
)
from engine.spec.metric_names import is_metric
from engine.spec.segments import SEGMENTS_FOLDER, Segment, lint_segment_folder
from engine.spec.settings_files import Signature, folder_signature

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """An event test whose answer changes by time alone: each matching event stops counting
    `span` after it happened (a `within` window, or the duration of a recency test)."""

    test: EventTest
    span: timedelta


@dataclass(frozen=True)
class Definition:
    segment: Segment
    hash: str  # of the condition: a new name or description rebuilds nothing
    reads: frozenset[str]  # change kinds (engine.audience.changes) that can change the answer
    windows: tuple[Window, ...] = ()

    @property
    def id(self) -> str:
        return self.segment.id

    def reads_kind(self, kind: str) -> bool:
        # computed attributes move with purchases: any event of the contact may change them
        return kind in self.reads or (kind.startswith(EVENT) and METRICS in self.reads)


@dataclass
class Catalog:
    """Usable segments by id, `order`: referenced segments before those composing them."""

    definitions: dict[str, Definition] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    dependents: dict[str, set[str]] = field(default_factory=dict)  # transitive

    def computed(self) -> Iterator[Definition]:
        """The condition segments, in reference order (manual ones are imported, not built)."""
        for segment_id in self.order:
            if not self.definitions[segment_id].segment.is_manual:
                yield self.definitions[segment_id]

    def readers(self, kind: str) -> list[str]:
        return [d.id for d in self.computed() if d.reads_kind(kind)]


def _walk(cond: Condition) -> Iterator[Condition]:
    yield cond
    if isinstance(cond, All | Any_):
        for item in cond.items:
            yield from _walk(item)
    elif isinstance(cond, Not):
        yield from _walk(cond.item)


def reads(cond: Condition) -> frozenset[str]:
    """The change kinds a condition reads (its segment references are followed by the order)."""
    kinds: set[str] = set()
    for c in _walk(cond):
        if isinstance(c, AttributeTest):
            kinds.add(METRICS if is_metric(c.attribute) else PROFILE)
        elif isinstance(c, TagTest):
            kinds.add(PROFILE)
        elif isinstance(c, EventTest):
            kinds.add(event_kind(c.event))
        elif isinstance(c, ConsentTest):
            kinds.add(CONSENT)
        elif isinstance(c, PressureTest):
            kinds.add(PRESSURE)
        elif isinstance(c, Expression):
            kinds.update((PROFILE, METRICS))
    return frozenset(kinds)


def windows(cond: Condition) -> tuple[Window, ...]:
    found = []
    for c in _walk(cond):
        if not isinstance(c, EventTest):
            continue
        if c.within is not None:
            found.append(Window(c, c.within))
        if c.measure == "recency" and isinstance(c.value, timedelta):
            found.append(Window(c, c.value))
    return tuple(found)


def definition(segment: Segment) -> Definition:
    cond = segment.condition
    text = "manual" if cond is None else repr(cond)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if cond is None:
        return Definition(segment, digest, frozenset())
    return Definition(segment, digest, reads(cond), windows(cond))


def build_catalog(segments: dict[str, Segment]) -> Catalog:
    graph = nx.DiGraph()
    graph.add_nodes_from(segments)
    for s in segments.values():
        graph.add_edges_from((ref, s.id) for ref in s.references)
    cyclic = {n for scc in nx.strongly_connected_components(graph) if len(scc) > 1 for n in scc}
    usable = {n for n in segments if n not in cyclic}
    for n in nx.topological_sort(graph.subgraph(usable)) if usable else []:
        if any(ref not in usable for ref in segments[n].references):
            usable.discard(n)  # composes a segment that is unknown, broken or cyclic
    kept = graph.subgraph(usable)
    order = list(nx.lexicographical_topological_sort(kept))
    return Catalog(
        {n: definition(segments[n]) for n in order},
        order,
        {n: set(nx.descendants(kept, n)) for n in order},
    )


class CatalogWatcher:
    """Reads `<scenarios_dir>/segments/` again when its files change; logs each problem once."""

    def __init__(self, scenarios_dir: Path) -> None:
        self.folder = Path(scenarios_dir) / SEGMENTS_FOLDER
        # None: every segment of the folder; a set: only these and those they compose (a
        # simulation keeps the segments its journeys read, not the whole workspace's)
        self.only: frozenset[str] | None = None
        self.catalog = Catalog()
        self._signature: Signature | None = None
        self._logged: set[str] = set()
        self.version = 0  # moves each time the catalog is read again

    def signature(self) -> Signature:
        return folder_signature(self.folder)

    def current(self) -> Catalog:
        signature = self.signature()
        if signature == self._signature:
            return self.catalog
        self._signature = signature
        linted = lint_segment_folder(self.folder)
        for problem in linted.problems:
            if problem.severity != "error":
                continue
            line = f"{problem.file}:{problem.line}: {problem.message}"
            if line not in self._logged:
                self._logged.add(line)
                logger.error("segment skipped: %s", line, extra={"action": "segments"})
        kept = linted.segments
        if self.only is not None:
            kept = _with_references(kept, self.only)
        self.catalog = build_catalog(kept)
        for skipped in sorted(set(kept) - set(self.catalog.definitions)):
            logger.error(
                "segment %s skipped: it composes a segment that cannot be built",
                skipped,
                extra={"action": "segments"},
            )
        self.version += 1
        return self.catalog


def _with_references(segments: dict[str, Segment], wanted: Collection[str]) -> dict[str, Segment]:
    """The `wanted` segments and every segment they compose, directly or not."""
    kept: dict[str, Segment] = {}
    todo = [w for w in wanted if w in segments]
    while todo:
        sid = todo.pop()
        if sid not in kept:
            kept[sid] = segments[sid]
            todo.extend(r for r in segments[sid].references if r in segments)
    return kept
