"""Events in by the list, each with its own outcome: recorded, or a duplicate of one already
stored (same `event_key`) or given earlier in the same list.

The writing is `engine.audience.ingest.record_events`, set-based, as for every other way
events come in; this module only tells the rows apart for the caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from engine.audience.ingest import record_events
from engine.store.models import Event

RECORDED, DUPLICATE = "recorded", "duplicate"


def record_event_rows(
    conn: Connection, events: list[dict[str, Any]], now: datetime
) -> tuple[list[str], int]:
    """Record cleaned events (`clean_event`); per event `recorded` or `duplicate`, and how many
    were recorded. The outcomes are read before writing: under a concurrent request carrying
    the same key, the count is exact and that row may say `recorded` for the other's copy."""
    keys = [e["event_key"] for e in events if e["event_key"]]
    stored: set[str] = set()
    if keys:
        query = select(Event.event_key).where(Event.event_key.in_(sorted(set(keys))))
        stored = {str(k) for k in conn.execute(query).scalars()}
    outcomes: list[str] = []
    for event in events:
        key = event["event_key"]
        if key and key in stored:
            outcomes.append(DUPLICATE)
            continue
        if key:
            stored.add(key)  # a later event with this key repeats this one
        outcomes.append(RECORDED)
    recorded, _ = record_events(conn, events, now)
    return outcomes, recorded
