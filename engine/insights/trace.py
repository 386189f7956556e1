"""The simulation trace: every entry, send, gate decision and exit as a JSON line, written while
`parcours simulate --trace FILE.jsonl` runs, so a scenario's author can check its timing without
reading the database.

After each pass of the worker the journal rows written since the last flush are read in id
order (the virtual clock only moves forward, so that is time order), a chunk at a time, joined
with their contact's external id, and appended to the file: nothing is held in memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.engine import Engine

from engine.store.models import Contact, JournalEntry

TRACED = ("entered", "send", "decision", "completed", "converted", "exited", "failed")
ENDED = frozenset(TRACED[3:])
CHUNK = 5000


class Trace:
    """Appends the journal's new rows to `out` on each `flush`."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.after = 0  # the last journal id written
        self.lines = 0

    def flush(self, engine: Engine) -> int:
        """Write every traced journal row newer than the last flush; returns how many."""
        written = 0
        while True:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(JournalEntry.id, JournalEntry.at, JournalEntry.kind,
                           JournalEntry.scenario_id, JournalEntry.step_id, JournalEntry.reason,
                           JournalEntry.data, Contact.external_id)
                    .outerjoin(Contact, Contact.id == JournalEntry.contact_id)
                    .where(JournalEntry.id > self.after)
                    .order_by(JournalEntry.id)
                    .limit(CHUNK)
                ).all()  # fmt: skip
            for r in rows:
                if r.kind in TRACED:
                    self.out.write(json.dumps(line(r), ensure_ascii=False) + "\n")
                    written += 1
            if rows:
                self.after = rows[-1].id
            if len(rows) < CHUNK:
                break
        self.lines += written
        return written


def line(row: Any) -> dict[str, Any]:
    """One trace line: `at` (the virtual instant), `kind`, `contact` (external id), `scenario`,
    `step`, `channel`, `decision` (allow, defer, skip, fallback, exit; None for entries and
    exits) and `reason` (the gate's rule id, or the exit's reason)."""
    data: Mapping[str, Any] = row.data if isinstance(row.data, Mapping) else {}
    decision = "allow" if row.kind == "send" else data.get("action")
    return {
        "at": row.at.isoformat(),
        "kind": row.kind,
        "contact": row.external_id,
        "scenario": row.scenario_id,
        "step": row.step_id,
        "channel": data.get("channel"),
        "decision": decision if row.kind in ("send", "decision") else None,
        "reason": row.reason,
    }
