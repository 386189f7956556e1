"""Keeping segment membership live: rebuilds, incremental refreshes, and the clock.

Each worker pass (engine.worker.runner) runs `SegmentUpkeep.run`:

- rebuilds, in reference order, every segment whose definition is new or changed, or whose last
  full build is older than SEGMENTS_REBUILD_HOURS (the safety net); manual segments never;
- reads the change feed (engine.audience.changes) and the contacts due (`segment_due`), and
  refreshes only those contacts, only in the segments that read what changed, then in the
  segments that compose those, set-based in chunks (engine.audience.membership);
- schedules the clock: for each refreshed or rebuilt contact and each event window of the
  condition, the instant the oldest matching event in it stops counting, when the answer may
  change with no new data ("no order in 90 days" becomes true then).

A segment's row in `segment_builds` is its lock: a rebuild or a refresh holds it until commit
(PostgreSQL: FOR UPDATE SKIP LOCKED). A refresh that finds it held puts its contacts off to the
next pass instead of waiting, so a long rebuild never holds the event pass back.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    delete,
    func,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from engine.audience.membership import REFRESH_CHUNK, Changes, rebuild, refresh_contacts
from engine.audience.operands import JsonOperand
from engine.audience.segment_catalog import Catalog, CatalogWatcher, Definition, Window
from engine.audience.segment_sql import SegmentSQLError, compare, events
from engine.policy.model import PressureConfig
from engine.store.db import id_in
from engine.store.models import ContactChange, SegmentBuild, SegmentChange, SegmentDue, UTCDateTime

logger = logging.getLogger(__name__)
SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])
CLAIM = 5000  # changes and due contacts taken per transaction
ROUNDS_PER_PASS = 20  # then the pass moves on to journeys; the rest waits for the next
due_table = cast(Table, SegmentDue.__table__)
history = cast(Table, SegmentChange.__table__)


def _dialect(conn: Connection) -> Any:
    return postgresql if conn.dialect.name == "postgresql" else sqlite


def _locking(conn: Connection, stmt: SelectT) -> SelectT:
    if conn.dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True)
    return stmt  # SQLite: BEGIN IMMEDIATE already holds every other writer off


def _upsert_due(conn: Connection, rows: Select[Any] | list[dict[str, Any]]) -> None:
    """Add contacts due at an instant; a contact already due keeps the earlier instant."""
    stmt = _dialect(conn).insert(SegmentDue)
    if isinstance(rows, Select):
        stmt = stmt.from_select(["segment_id", "contact_id", "due_at"], rows)
    earliest = func.least if conn.dialect.name == "postgresql" else func.min
    stmt = stmt.on_conflict_do_update(
        index_elements=["segment_id", "contact_id"],
        set_={"due_at": earliest(due_table.c.due_at, stmt.excluded.due_at)},
    )
    if isinstance(rows, Select):
        conn.execute(stmt)
    elif rows:
        conn.execute(stmt, rows)


def defer(conn: Connection, segment_id: str, contact_ids: Iterable[int], now: datetime) -> None:
    """Refresh these contacts of the segment at the next pass."""
    rows = [{"segment_id": segment_id, "contact_id": c, "due_at": now} for c in sorted(contact_ids)]
    for start in range(0, len(rows), REFRESH_CHUNK):
        _upsert_due(conn, rows[start : start + REFRESH_CHUNK])


def lock_segment(conn: Connection, segment_id: str) -> bool:
    """Hold the segment's build row until commit; False when another worker holds it."""
    found = conn.execute(
        _locking(conn, select(SegmentBuild.segment_id).where(SegmentBuild.segment_id == segment_id))
    ).first()
    return found is not None


# ------------------------------------------------------------------ the clock


def _leaves(conn: Connection, span: timedelta) -> ColumnElement[Any]:
    """The instant an event stops counting: `span` after it happened."""
    at = events.c.occurred_at
    if conn.dialect.name == "postgresql":
        return at + span
    # SQLite keeps instants as 'YYYY-MM-DD HH:MM:SS.ffffff' text: add whole seconds, keep the
    # fraction, and the result still compares as text with the stored instants.
    seconds = int(span.total_seconds())
    return func.strftime("%Y-%m-%d %H:%M:%S", at, f"+{seconds} seconds").concat(func.substr(at, 20))


def _window_due(
    conn: Connection, segment_id: str, window: Window, ids: Sequence[int] | None, now: datetime
) -> Select[Any]:
    test, dialect = window.test, conn.dialect.name
    clauses = [
        events.c.name == test.event,
        events.c.occurred_at <= now,
        events.c.occurred_at > now - window.span,
    ]
    for f in test.where:
        prop = JsonOperand(dialect, events.c.properties, tuple(f.property.split(".")))
        clauses.append(compare(f.op, prop, f.value, now))
    if ids is not None:
        clauses.append(id_in(events.c.contact_id, ids, dialect))
    return (
        select(literal(segment_id), events.c.contact_id, func.min(_leaves(conn, window.span)))
        .where(*clauses)
        .group_by(events.c.contact_id)
    )


def schedule(conn: Connection, d: Definition, ids: Sequence[int] | None, now: datetime) -> None:
    """Make each contact (None: every one) due when its next windowed event stops counting."""
    chunks = [None] if ids is None else [
        ids[i : i + REFRESH_CHUNK] for i in range(0, len(ids), REFRESH_CHUNK)
    ]  # fmt: skip
    for window in d.windows:
        for chunk in chunks:
            _upsert_due(conn, _window_due(conn, d.id, window, chunk, now))


# ------------------------------------------------------------------ the pass


class SegmentUpkeep:
    """The segments of one workspace folder, kept by one worker."""

    def __init__(
        self,
        scenarios_dir: Any,
        rebuild_every: timedelta,
        pressure: PressureConfig | None = None,
    ) -> None:
        self.watcher = CatalogWatcher(scenarios_dir)
        self.rebuild_every = rebuild_every
        self.pressure = pressure
        self._built: dict[str, tuple[str, datetime | None]] = {}  # id → (hash, built at)
        self._seen_version = -1
        self._forced: set[str] = set()  # rebuilt at the next pass whatever their age
        self._broken: set[str] = set()  # cannot be computed in SQL: logged once, left alone
        self._kinds: dict[str, bool] = {}
        self._kinds_version = -1

    @property
    def catalog(self) -> Catalog:
        return self.watcher.current()

    def reads(self, kind: str) -> bool:
        """Whether a segment of the catalog as last read reads this kind of change."""
        if self._kinds_version != self.watcher.version:
            self._kinds, self._kinds_version = {}, self.watcher.version
        found = self._kinds.get(kind)
        if found is None:
            found = self._kinds[kind] = bool(self.watcher.catalog.readers(kind))
        return found

    def manual(self) -> frozenset[str]:
        return frozenset(
            d.id for d in self.watcher.catalog.definitions.values() if d.segment.is_manual
        )

    def rebuild_metric_readers(self) -> None:
        """Rebuild the segments that read computed attributes (after their recompute)."""
        from engine.audience.changes import METRICS

        self._forced |= {d.id for d in self.catalog.computed() if METRICS in d.reads}

    def run(self, engine: Engine, now: datetime) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        catalog = self.watcher.current()
        if self._seen_version != self.watcher.version:
            with engine.connect() as conn:
                self._built = {
                    r.segment_id: (r.definition_hash, r.built_at)
                    for r in conn.execute(select(SegmentBuild))
                }
            self._seen_version = self.watcher.version
        for d in list(catalog.computed()):
            if d.id not in self._broken and self._due(d, now):
                self._rebuild(engine, catalog, d, now, counts)
        for _ in range(ROUNDS_PER_PASS):
            if self._refresh_round(engine, catalog, now, counts) < CLAIM:
                break
        return dict(counts)

    def _due(self, d: Definition, now: datetime) -> bool:
        built = self._built.get(d.id)
        if d.id in self._forced or built is None or built[0] != d.hash or built[1] is None:
            return True
        return built[1] + self.rebuild_every <= now

    def _rebuild(
        self, engine: Engine, catalog: Catalog, d: Definition, now: datetime,
        counts: dict[str, int],
    ) -> None:  # fmt: skip
        assert d.segment.condition is not None
        forced = d.id in self._forced
        with engine.begin() as conn:
            conn.execute(
                _dialect(conn)
                .insert(SegmentBuild)
                .values(segment_id=d.id, definition_hash="", built_at=None)
                .on_conflict_do_nothing(index_elements=["segment_id"])
            )
            row = conn.execute(
                _locking(conn, select(SegmentBuild).where(SegmentBuild.segment_id == d.id))
            ).first()
            if row is None:
                return  # another worker is building it: look again next pass
            self._built[d.id] = (row.definition_hash, row.built_at)
            if not forced and not self._due(d, now):
                return  # another worker has just built it
            before = conn.execute(select(func.max(history.c.id))).scalar() or 0
            try:
                changes = rebuild(conn, d.id, d.segment.condition, now, pressure=self.pressure)
            except SegmentSQLError as exc:
                self._broken.add(d.id)
                logger.error("segment %s cannot be built: %s", d.id, exc,
                             extra={"action": "segments"})  # fmt: skip
                return
            conn.execute(
                delete(SegmentDue).where(SegmentDue.segment_id == d.id, SegmentDue.due_at <= now)
            )
            schedule(conn, d, None, now)
            self._compose(conn, catalog, d.id, before, now)
            conn.execute(
                update(SegmentBuild)
                .where(SegmentBuild.segment_id == d.id)
                .values(definition_hash=d.hash, built_at=now)
            )
        self._built[d.id] = (d.hash, now)
        self._forced.discard(d.id)
        counts["segments_rebuilt"] += 1
        counts["segment_entries"] += changes.entered
        counts["segment_exits"] += changes.exited

    def _compose(
        self, conn: Connection, catalog: Catalog, segment_id: str, after: int, now: datetime
    ) -> None:
        """The contacts that entered or left `segment_id` since history id `after` are due in
        the segments composing it."""
        for other in catalog.computed():
            if segment_id not in other.segment.references:
                continue
            changed = (
                select(literal(other.id), history.c.contact_id, literal(now, type_=UTCDateTime()))
                .where(history.c.segment_id == segment_id, history.c.id > after)
                .distinct()
            )
            _upsert_due(conn, changed)

    def compose_changes(
        self, conn: Connection, segment_id: str, contact_ids: Iterable[int], now: datetime
    ) -> None:
        """Contacts that entered or left a segment (a manual list's import) are due in the
        segments composing it."""
        ids = set(contact_ids)
        for other in self.catalog.computed():
            if segment_id in other.segment.references:
                defer(conn, other.id, ids, now)

    def _refresh_round(
        self, engine: Engine, catalog: Catalog, now: datetime, counts: dict[str, int]
    ) -> int:
        with engine.begin() as conn:
            changed = conn.execute(
                _locking(
                    conn,
                    select(ContactChange.contact_id, ContactChange.kind)
                    .order_by(ContactChange.contact_id, ContactChange.kind)
                    .limit(CLAIM),
                )
            ).all()
            due = conn.execute(
                _locking(
                    conn,
                    select(SegmentDue.segment_id, SegmentDue.contact_id)
                    .where(SegmentDue.due_at < now)
                    .order_by(SegmentDue.due_at)
                    .limit(CLAIM),
                )
            ).all()
            if not changed and not due:
                return 0
            pairs: list[tuple[int, str]] = [(r[0], r[1]) for r in changed]
            for start in range(0, len(pairs), REFRESH_CHUNK):
                part = pairs[start : start + REFRESH_CHUNK]
                conn.execute(
                    delete(ContactChange).where(
                        tuple_(ContactChange.contact_id, ContactChange.kind).in_(part)
                    )
                )
            dues: list[tuple[str, int]] = [(r[0], r[1]) for r in due]
            for start in range(0, len(dues), REFRESH_CHUNK):
                done = dues[start : start + REFRESH_CHUNK]
                conn.execute(
                    delete(SegmentDue).where(
                        tuple_(SegmentDue.segment_id, SegmentDue.contact_id).in_(done)
                    )
                )
            work: dict[str, set[int]] = defaultdict(set)
            readers: dict[str, list[str]] = {}
            for contact_id, kind in pairs:
                if kind not in readers:
                    readers[kind] = catalog.readers(kind)
                for segment_id in readers[kind]:
                    work[segment_id].add(contact_id)
            for segment_id, contact_id in dues:
                work[segment_id].add(contact_id)
            self._refresh(conn, catalog, work, now, counts)
        return max(len(changed), len(due))

    def _refresh(
        self, conn: Connection, catalog: Catalog, work: dict[str, set[int]], now: datetime,
        counts: dict[str, int],
    ) -> None:  # fmt: skip
        for d in catalog.computed():
            ids = set(work.get(d.id, ()))
            for ref in d.segment.references:
                ids |= work.get(ref, set())
            if not ids or d.id in self._broken:
                continue
            work[d.id] = ids
            assert d.segment.condition is not None
            if not lock_segment(conn, d.id):
                defer(conn, d.id, ids, now)  # being rebuilt or refreshed elsewhere
                counts["segment_refresh_deferred"] += len(ids)
                continue
            ordered = sorted(ids)
            try:
                changes: Changes = refresh_contacts(
                    conn, d.id, d.segment.condition, ordered, now, pressure=self.pressure
                )
            except SegmentSQLError:
                self._broken.add(d.id)
                continue
            schedule(conn, d, ordered, now)
            counts["segment_refreshed"] += len(ordered)
            counts["segment_entries"] += changes.entered
            counts["segment_exits"] += changes.exited
