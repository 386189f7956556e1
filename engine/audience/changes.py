"""The change feed of segment membership: which contacts' data of which kind changed.

Where contacts change (an import, the contacts API, a consent, an update step, an event, a
send that weighs on the barometer) one row per contact and kind is upserted in the same
transaction; the worker reads them, refreshes the segments that read that kind for those
contacts only, and deletes them (engine.audience.segment_upkeep). An upsert rather than an
insert that ignores conflicts: a change written while the worker holds the row waits for it,
then lands again, so none is lost between the worker's read and its delete.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.models import ContactChange, UTCDateTime

PROFILE = "profile"  # fields, attributes, tags, score
CONSENT = "consent"
PRESSURE = "pressure"
METRICS = "metrics"  # computed attributes: rebuilt after each recompute, refreshed on events
EVENT = "event:"  # + the event name


def event_kind(name: str) -> str:
    return f"{EVENT}{name}"


def _upsert(conn: Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ContactChange)
    return stmt, stmt.on_conflict_do_update(
        index_elements=["contact_id", "kind"], set_={"changed_at": stmt.excluded.changed_at}
    )


def mark_changed(conn: Connection, changes: Iterable[tuple[int, str]], now: datetime) -> None:
    """Note that each (contact id, kind) changed, in one statement."""
    rows = [{"contact_id": c, "kind": k, "changed_at": now} for c, k in sorted(set(changes))]
    if rows:
        _, stmt = _upsert(conn)
        conn.execute(stmt, rows)


def mark_selected(conn: Connection, contact_ids: Select[Any], kind: str, now: datetime) -> None:
    """Note that the contacts `contact_ids` selects (one column) changed `kind`: INSERT…SELECT."""
    found = contact_ids.subquery()
    rows = select(found.c[0], literal(kind), literal(now, type_=UTCDateTime())).where(
        found.c[0].is_not(None)
    )
    plain, _ = _upsert(conn)
    stmt = plain.from_select(["contact_id", "kind", "changed_at"], rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["contact_id", "kind"], set_={"changed_at": stmt.excluded.changed_at}
    )
    conn.execute(stmt)
