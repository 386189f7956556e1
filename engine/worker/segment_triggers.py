"""Firing membership changes: every entry and exit in `segment_history` is read once, in id
order, after a cursor (whoever wrote it: a rebuild, a refresh, a manual list's import).

An entry enrolls the contact in live scenarios with `segment_entered: ID` and an exit in those
with `segment_exited: ID` (entry key `segment:<history id>`, so the entry rules and the one
active enrollment apply through `enroll`, and a replay enrolls nobody twice); an exit also ends
the active enrollments of scenarios whose `exit_on` has `segment_exited: ID`, journaled with the
segment, and only those. The cursor moves in the transaction that acts, so a crash resumes where
it stopped, and its row is locked while it moves, so two workers never fire the same change.

On PostgreSQL a history id may commit after a higher one; the pass reads only up to the high
water mark, the highest id below which every writer has committed (taken under a brief SHARE lock
of the table, given up after a moment rather than waited for).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from engine.runtime.state import ACTIVE, EXITED
from engine.spec.model import Scenario, SegmentEnteredTrigger, SegmentExitedTrigger
from engine.store.models import Cursor, Enrollment, JournalEntry, SegmentChange
from engine.worker.enroll import Candidate, enroll

logger = logging.getLogger(__name__)
CURSOR = "segment_history"
FIRE_CHUNK = 1000
Live = list[tuple[int, Scenario]]
ComposeChanges = Callable[[Connection, str, list[int], datetime], None]


def newest_change(engine: Engine) -> int:
    """The highest history id committed now (cheap: the primary key's last entry)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(SegmentChange.id))).scalar() or 0)


def high_water(engine: Engine) -> int | None:
    """The highest history id below which every row is committed; None: writers are busy."""
    with engine.connect() as conn, conn.begin() as trans:
        if conn.dialect.name == "postgresql":
            try:
                conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                conn.execute(text("LOCK TABLE segment_history IN SHARE MODE"))
            except OperationalError:
                trans.rollback()
                return None
        return int(conn.execute(select(func.max(SegmentChange.id))).scalar() or 0)


def _cursor(conn: Connection) -> int | None:
    """The cursor, locked until commit; None when another worker holds it."""
    stmt = select(Cursor.value).where(Cursor.name == CURSOR)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(Cursor).values(name=CURSOR, value=0).on_conflict_do_nothing())
        found = conn.execute(stmt.with_for_update(skip_locked=True)).first()
        return None if found is None else int(found.value)
    value = conn.execute(stmt).scalar()
    if value is None:
        conn.execute(insert(Cursor).values(name=CURSOR, value=0))
    return int(value or 0)


def _runs(rows: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
    """Consecutive rows of one kind of change: entries and exits keep their order."""
    for change, run in groupby(rows, key=lambda r: r.change):
        yield change, list(run)


def fire_changes(
    conn: Connection,
    live: Live,
    upto: int,
    now: datetime,
    max_age: timedelta,
    scenario_of: Callable[[int], Scenario],
    manual: frozenset[str] = frozenset(),
    compose: ComposeChanges | None = None,
) -> dict[str, int]:
    """Act on the next chunk of membership changes up to history id `upto`; {} when none."""
    after = _cursor(conn)
    if after is None or after >= upto:
        return {}
    rows = conn.execute(
        select(SegmentChange.id, SegmentChange.segment_id, SegmentChange.contact_id,
               SegmentChange.change, SegmentChange.at)
        .where(SegmentChange.id > after, SegmentChange.id <= upto)
        .order_by(SegmentChange.id)
        .limit(FIRE_CHUNK)
    ).all()  # fmt: skip
    counts: dict[str, int] = defaultdict(int)
    entering: dict[str, Live] = defaultdict(list)
    leaving: dict[str, Live] = defaultdict(list)
    for version_id, scenario in live:
        for trig in scenario.triggers:
            if isinstance(trig, SegmentEnteredTrigger):
                entering[trig.segment].append((version_id, scenario))
            elif isinstance(trig, SegmentExitedTrigger):
                leaving[trig.segment].append((version_id, scenario))
    for change, run in _runs(rows):
        if change == "exited":
            counts["segment_left"] += _exit_enrollments(conn, run, now, scenario_of)
        starting = entering if change == "entered" else leaving
        candidates = [
            Candidate(version_id, scenario, r.contact_id, f"segment:{r.id}", now, None, "segment")
            for r in run
            if now - r.at <= max_age  # an old change (a late import) starts no journey
            for version_id, scenario in starting.get(r.segment_id, ())
        ]
        for key, value in enroll(conn, candidates, now).items():
            counts[key] += value
    if compose is not None:
        by_segment: dict[str, list[int]] = defaultdict(list)
        for r in rows:
            if r.segment_id in manual:
                by_segment[r.segment_id].append(r.contact_id)
        for segment_id, ids in by_segment.items():
            compose(conn, segment_id, ids, now)
    if rows:
        conn.execute(
            update(Cursor).where(Cursor.name == CURSOR).values(value=rows[-1].id, updated_at=now)
        )
    counts["segment_changes"] = len(rows)
    return dict(counts)


def _exit_enrollments(
    conn: Connection, run: list[Any], now: datetime, scenario_of: Callable[[int], Scenario]
) -> int:
    """End the active enrollments whose scenario version exits on leaving the segment."""
    left: dict[int, list[Any]] = defaultdict(list)
    for r in run:
        left[r.contact_id].append(r)
    active = conn.execute(
        select(Enrollment.id, Enrollment.version_id, Enrollment.contact_id,
               Enrollment.scenario_id, Enrollment.step_id)
        .where(Enrollment.contact_id.in_(list(left)), Enrollment.status == ACTIVE)
    ).all()  # fmt: skip
    ending: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for e in active:
        rules = {rule.segment for rule in scenario_of(e.version_id).segment_exits}
        for change in left[e.contact_id]:
            if change.segment_id in rules:
                ending[change.segment_id].append((e, change.id))
                break
    exited = 0
    for segment_id, pairs in ending.items():
        reason = f"segment_exited:{segment_id}"
        by_id = {e.id: (e, change_id) for e, change_id in pairs}
        # The attempt moves, like a claim: a batch advancing one of these right now is fenced
        # out (its update finds another attempt) and this exit stands.
        done = conn.execute(
            update(Enrollment)
            .where(Enrollment.id.in_(list(by_id)), Enrollment.status == ACTIVE)
            .values(status=EXITED, end_reason=reason, ended_at=now, due_at=None, deadline=None,
                    waiting_for=None, attempt=Enrollment.attempt + 1)
            .returning(Enrollment.id)
        ).scalars().all()  # fmt: skip
        journal = []
        for i in done:
            e, change_id = by_id[i]
            journal.append({
                "at": now, "kind": EXITED, "enrollment_id": i, "contact_id": e.contact_id,
                "scenario_id": e.scenario_id, "version_id": e.version_id, "step_id": e.step_id,
                "reason": reason, "data": {"segment": segment_id, "change_id": change_id},
            })  # fmt: skip
        if journal:
            conn.execute(insert(JournalEntry), journal)
        exited += len(done)
    return exited
