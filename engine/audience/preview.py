"""How many contacts a condition accepts now, and a few of them: the designer's live count.

The same compiled query a segment rebuild runs (engine.audience.segment_sql), counted rather than
stored, so that what the marketer sees while editing is what the segment or audience will hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, func, select

from engine.audience.membership import stored_members
from engine.audience.segment_sql import SegmentSQLError, compile_condition, contacts
from engine.policy.model import PressureConfig
from engine.spec.conditions import Condition


@dataclass(frozen=True)
class Preview:
    """`count` contacts match; `sample` gives the external ids of the first few (by contact id).

    `error` says why the condition cannot be counted in the database (an expression, say): then
    count is None and the sample empty.
    """

    count: int | None
    sample: list[str] = field(default_factory=list)
    error: str | None = None


def preview(
    conn: Connection,
    condition: Condition,
    now: datetime,
    *,
    pressure: PressureConfig | None = None,
    sample: int = 10,
) -> Preview:
    """Count the contacts `condition` accepts as of `now` and name the first `sample` of them."""
    try:
        query = compile_condition(
            condition, now, stored_members, dialect=conn.dialect.name, pressure=pressure
        )
    except SegmentSQLError as exc:
        return Preview(None, error=str(exc))
    found = query.subquery()
    total = conn.execute(select(func.count()).select_from(found)).scalar_one()
    first = conn.execute(
        select(contacts.c.external_id)
        .where(contacts.c.id.in_(select(found.c.id)))
        .order_by(contacts.c.id)
        .limit(sample)
    ).scalars()
    return Preview(int(total), [str(x) for x in first])
