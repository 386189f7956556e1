"""Stored segment membership: who is in a segment since when, every entry and exit, the daily count.

A rebuild computes the member set with one query (the condition compiled by
engine.audience.segment_sql) into a scratch table of this connection, then applies the
difference with a fixed number of set-based statements: the entries and exits are written to
the history and to the members in the database, never one row per round trip, whatever the size
of the segment. A refresh does the same for a given set of contacts only (the ones an event,
a profile change or a consent just touched): the others keep their membership until their turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    MetaData,
    Select,
    Table,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from engine.audience.segment_sql import SegmentMembers, compile_condition, contacts
from engine.policy.model import PressureConfig
from engine.spec.conditions import Condition
from engine.store.db import id_in
from engine.store.models import SegmentChange, SegmentCount, SegmentMember, UTCDateTime

ENTERED, EXITED = "entered", "exited"
REFRESH_CHUNK = 1000  # contacts per refresh pass: keeps SQLite's IN lists below its limits

# Session-local: each connection has its own, so rebuilds on other connections never mix.
# `entering` is decided while the scratch table fills, before the members change: a statement
# that inserted into segment_members while probing it would let PostgreSQL plan a nested loop
# over a table it believes empty, growing as it scans (quadratic).
_scratch = Table(
    "segment_scratch",
    MetaData(),
    Column("contact_id", BigInteger, primary_key=True),
    Column("entering", Boolean, nullable=False),
)
_CREATE_SCRATCH = {
    "postgresql": "CREATE TEMP TABLE IF NOT EXISTS segment_scratch "
    "(contact_id bigint PRIMARY KEY, entering boolean NOT NULL) ON COMMIT DELETE ROWS",
    "sqlite": "CREATE TEMP TABLE IF NOT EXISTS segment_scratch "
    "(contact_id INTEGER PRIMARY KEY, entering BOOLEAN NOT NULL)",
}
_CLEAR_SCRATCH = {"postgresql": "TRUNCATE segment_scratch", "sqlite": "DELETE FROM segment_scratch"}

members_table = cast(Table, SegmentMember.__table__)
history_table = cast(Table, SegmentChange.__table__)


@dataclass(frozen=True)
class Changes:
    """How many contacts entered and left the segment."""

    entered: int = 0
    exited: int = 0

    def __add__(self, other: Changes) -> Changes:
        return Changes(self.entered + other.entered, self.exited + other.exited)


def stored_members(segment_id: str) -> Select[Any]:
    """The stored members of a segment, for conditions that compose segments."""
    return select(members_table.c.contact_id).where(members_table.c.segment_id == segment_id)


def rebuild(
    conn: Connection,
    segment_id: str,
    condition: Condition,
    now: datetime,
    *,
    segment_members: SegmentMembers = stored_members,
    pressure: PressureConfig | None = None,
    reason: str = "rebuild",
) -> Changes:
    """Recompute the whole segment as of `now` and apply the entries and exits."""
    query = compile_condition(
        condition, now, segment_members, dialect=conn.dialect.name, pressure=pressure
    )
    changes = _apply(conn, segment_id, query, None, now, reason)
    _recount(conn, segment_id, now)
    return changes


def refresh_contacts(
    conn: Connection,
    segment_id: str,
    condition: Condition,
    contact_ids: Sequence[int],
    now: datetime,
    *,
    segment_members: SegmentMembers = stored_members,
    pressure: PressureConfig | None = None,
    reason: str = "refresh",
) -> Changes:
    """Recompute the segment for `contact_ids` only and apply their entries and exits."""
    ids = sorted(set(contact_ids))
    if not ids:
        return Changes()
    dialect = conn.dialect.name
    query = compile_condition(condition, now, segment_members, dialect=dialect, pressure=pressure)
    changes = Changes()
    for start in range(0, len(ids), REFRESH_CHUNK):
        chunk = ids[start : start + REFRESH_CHUNK]
        scoped = query.where(id_in(contacts.c.id, chunk, dialect))
        changes += _apply(conn, segment_id, scoped, chunk, now, reason)
    _count_delta(conn, segment_id, now, changes.entered - changes.exited)
    return changes


def replace_members(
    conn: Connection,
    segment_id: str,
    query: Select[Any],
    now: datetime,
    *,
    scope: Sequence[int] | None = None,
    reason: str,
) -> Changes:
    """Make the members (within `scope`, None: all) the contacts `query` selects, writing each
    entry and exit to the history: a manual list's import, say.

    `query` selects one column labelled `id` (contact ids), only of contacts within `scope`.
    """
    ids = None if scope is None else sorted(set(scope))
    changes = _apply(conn, segment_id, query, ids, now, reason)
    if ids is None:
        _recount(conn, segment_id, now)
    else:
        _count_delta(conn, segment_id, now, changes.entered - changes.exited)
    return changes


def _apply(
    conn: Connection,
    segment_id: str,
    query: Select[Any],
    scope: list[int] | None,
    now: datetime,
    reason: str,
) -> Changes:
    """Make the stored members (within `scope`, None: all) the contacts `query` gives."""
    dialect = conn.dialect.name
    conn.execute(text(_CREATE_SCRATCH[dialect]))
    m, s = members_table.c, _scratch.c
    found = query.subquery()
    in_segment = m.segment_id == segment_id
    already = exists().where(in_segment, m.contact_id == found.c.id)
    conn.execute(
        insert(_scratch).from_select(["contact_id", "entering"], select(found.c.id, ~already))
    )
    if scope is None and dialect == "postgresql":
        conn.execute(text("ANALYZE segment_scratch"))  # temporary tables get no autovacuum
    leaving = [in_segment, ~exists().where(s.contact_id == m.contact_id)]
    if scope is not None:
        leaving.append(id_in(m.contact_id, scope, dialect))
    at = literal(now, type_=UTCDateTime())

    def changes(contact_id: Any, change: str) -> Select[Any]:
        return select(literal(segment_id), contact_id, literal(change), at, literal(reason))

    columns = ["segment_id", "contact_id", "change", "at", "reason"]
    # Read at once: a later statement may reuse the DBAPI cursor the count comes from.
    keep = {"preserve_rowcount": True}
    entering = changes(s.contact_id, ENTERED).where(s.entering).order_by(s.contact_id)
    entered = conn.execute(
        insert(history_table).from_select(columns, entering), execution_options=keep
    ).rowcount
    leavers = changes(m.contact_id, EXITED).where(*leaving).order_by(m.contact_id)
    exited = conn.execute(
        insert(history_table).from_select(columns, leavers), execution_options=keep
    ).rowcount
    conn.execute(delete(members_table).where(*leaving))
    conn.execute(
        insert(members_table).from_select(
            ["segment_id", "contact_id", "since"],
            select(literal(segment_id), s.contact_id, at).where(s.entering),
        )
    )
    conn.execute(text(_CLEAR_SCRATCH[dialect]))
    return Changes(entered, exited)


def _day(now: datetime) -> date:
    return now.astimezone(UTC).date()


def _recount(conn: Connection, segment_id: str, now: datetime) -> None:
    """Store today's count from the members themselves."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    counted = select(literal(segment_id), literal(_day(now)), func.count()).where(
        members_table.c.segment_id == segment_id
    )
    stmt = dialect.insert(SegmentCount).from_select(["segment_id", "day", "members"], counted)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["segment_id", "day"], set_={"members": stmt.excluded.members}
        )
    )


def _count_delta(conn: Connection, segment_id: str, now: datetime, delta: int) -> None:
    """Move today's count by `delta`; the first change of a day counts the members."""
    moved = conn.execute(
        update(SegmentCount)
        .where(SegmentCount.segment_id == segment_id, SegmentCount.day == _day(now))
        .values(members=SegmentCount.members + delta)
    ).rowcount
    if not moved:
        _recount(conn, segment_id, now)


def members(conn: Connection, segment_id: str, limit: int = 100, after: int = 0) -> list[int]:
    """Member contact ids in order, `limit` of them after the id `after` (keyset pages)."""
    rows = conn.execute(
        select(members_table.c.contact_id)
        .where(members_table.c.segment_id == segment_id, members_table.c.contact_id > after)
        .order_by(members_table.c.contact_id)
        .limit(limit)
    )
    return list(rows.scalars())


def count(conn: Connection, segment_id: str) -> int:
    """How many contacts are in the segment now."""
    found = conn.execute(
        select(func.count()).where(members_table.c.segment_id == segment_id)
    ).scalar_one()
    return int(found)


def contact_segments(conn: Connection, contact_id: int) -> list[tuple[str, datetime]]:
    """The segments a contact is in, with the instant they entered each."""
    rows = conn.execute(
        select(members_table.c.segment_id, members_table.c.since)
        .where(members_table.c.contact_id == contact_id)
        .order_by(members_table.c.segment_id)
    )
    return [(r.segment_id, r.since) for r in rows]


def count_trend(
    conn: Connection, segment_id: str, since: date | None = None
) -> list[tuple[date, int]]:
    """The segment's count at the end of each day it changed, oldest first."""
    query = select(SegmentCount.day, SegmentCount.members).where(
        SegmentCount.segment_id == segment_id
    )
    if since is not None:
        query = query.where(SegmentCount.day >= since)
    return [(r.day, int(r.members)) for r in conn.execute(query.order_by(SegmentCount.day))]
