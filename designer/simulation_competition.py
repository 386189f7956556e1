"""What the other journeys did to the open one in a simulation, from the journal of each run.

The open journey runs twice on the same contacts and events: with the other journeys, then
alone. Both runs journal every policy decision with its rule; the difference, reason by reason,
is what the competition removed, delayed or rerouted. The journal names the rule, not whose
sends filled a cap, so a held-back message is put down to each other journey that had written
to the same contact within the policy's longest cap or spacing span before it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from engine.store.models import Enrollment, JournalEntry, Send

VERBS = ("removed", "delayed", "rerouted")
# Rules that read other journeys' sends; consent, quiet hours or addresses do not.
SHARED_RULES = ("cap:", "pressure:")


def verb(data: dict[str, Any] | None) -> str:
    """What a journaled decision did to its message."""
    action = (data or {}).get("action", "skip")
    return {"defer": "delayed", "fallback": "rerouted"}.get(action, "removed")


def rival_figures(
    engine: Engine, scenario_id: str, rivals: list[str], window: timedelta | None
) -> dict[str, dict[str, int]]:
    """Per other journey: contacts entered, messages sent, and the open journey's messages
    held back by a shared rule at a contact it had written to within `window` before."""
    figures = {r: {"entered": 0, "sent": 0, **dict.fromkeys(VERBS, 0)} for r in rivals}
    with engine.connect() as conn:
        entered = select(Enrollment.scenario_id).where(Enrollment.scenario_id.in_(rivals))
        for (rival,) in conn.execute(entered):
            figures[rival]["entered"] += 1
        written: dict[tuple[int, str], list[datetime]] = defaultdict(list)
        sent = select(Send.contact_id, Send.scenario_id, Send.created_at)
        for contact, rival, at in conn.execute(sent.where(Send.scenario_id.in_(rivals))):
            figures[rival]["sent"] += 1
            written[(contact, rival)].append(at)
        if window is None:
            return figures
        for times in written.values():
            times.sort()
        held = select(JournalEntry.contact_id, JournalEntry.at, JournalEntry.reason,
                      JournalEntry.data)  # fmt: skip
        held = held.where(JournalEntry.kind == "decision", JournalEntry.scenario_id == scenario_id)
        for contact, at, reason, data in conn.execute(held):
            if not str(reason or "").startswith(SHARED_RULES):
                continue
            for rival in rivals:
                times = written.get((contact, rival), [])
                if bisect_right(times, at) > bisect_left(times, at - window):
                    figures[rival][verb(data)] += 1
    return figures


def compare(
    with_others: dict[str, dict[str, int]], alone: dict[str, dict[str, int]]
) -> list[dict[str, Any]]:
    """Per policy reason, what it did with the others and alone; only the reasons that differ,
    the largest difference first."""
    rows = []
    for reason in sorted(set(with_others) | set(alone)):
        together, by_itself = Counter(with_others.get(reason, {})), Counter(alone.get(reason, {}))
        if any(together[v] != by_itself[v] for v in VERBS):
            row: dict[str, Any] = {"reason": reason}
            for v in VERBS:
                row[v], row[f"alone_{v}"] = together[v], by_itself[v]
            rows.append(row)
    return sorted(rows, key=lambda r: -sum(abs(r[v] - r[f"alone_{v}"]) for v in VERBS))
