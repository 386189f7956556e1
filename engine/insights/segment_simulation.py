"""Segment triggers in `parcours simulate`: what the generated run does so that contacts enter
and leave the segments scenarios start on, and the count of entries by segment trigger.

A condition segment changes through the real worker: events of the kinds its condition reads
are generated and recorded like any other. A manual segment changes as an import changes it:
planned joins and leaves are applied at their instants through `replace_members`.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import false, select

from engine.audience.membership import replace_members
from engine.spec.conditions import event_names
from engine.spec.model import Scenario, SegmentEnteredTrigger, SegmentExitedTrigger
from engine.spec.segments import SEGMENTS_FOLDER, Segment, lint_segment_folder
from engine.store.models import Contact, Enrollment, SegmentChange


def simulation_segments(scenarios_dir: Path) -> dict[str, Segment]:
    """The usable segments beside the scenarios (a file with errors is left out, as the worker
    leaves it out)."""
    return lint_segment_folder(scenarios_dir / SEGMENTS_FOLDER).segments


def _segment_triggers(scenarios: Sequence[Scenario]) -> dict[str, set[str]]:
    """Segment id → the changes ("entered", "exited") some scenario starts on."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for scenario in scenarios:
        for trig in scenario.triggers:
            if isinstance(trig, SegmentEnteredTrigger):
                wanted[trig.segment].add("entered")
            elif isinstance(trig, SegmentExitedTrigger):
                wanted[trig.segment].add("exited")
    return wanted


def _read_events(segment_id: str, segments: Mapping[str, Segment], seen: set[str]) -> set[str]:
    """The event names a segment's condition reads, through the segments it composes."""
    segment = segments.get(segment_id)
    if segment is None or segment.condition is None or segment_id in seen:
        return set()
    seen.add(segment_id)
    names = event_names(segment.condition)
    for other in segment.references:
        names |= _read_events(other, segments, seen)
    return names


def generate_segment_events(
    scenarios: Sequence[Scenario],
    contacts: Sequence[Mapping[str, Any]],
    start: datetime,
    days: int,
    segments: Mapping[str, Segment],
    seed: int = 7,
) -> list[dict[str, Any]]:
    """For each condition segment a scenario starts on, events its condition reads for half the
    contacts (one to three of each, at random instants of the first half of the run), so that
    membership changes as the worker keeps it."""
    rng = random.Random(seed + 1)  # its own draws: the other generated events stay the same
    span = timedelta(days=max(days, 1)) / 2
    names = sorted(
        {n for s in _segment_triggers(scenarios) for n in _read_events(s, segments, set())}
    )
    events: list[dict[str, Any]] = []
    for contact in contacts:
        if not names or rng.random() >= 0.5:
            continue
        for name in names:
            for _ in range(rng.choice((1, 2, 3))):
                props = {"total": round(rng.uniform(15, 300), 2)}
                when = start + span * rng.random()
                events.append({"contact": contact["external_id"], "name": name,
                               "occurred_at": when, "properties": props})  # fmt: skip
    return events


def generate_memberships(
    scenarios: Sequence[Scenario],
    contacts: Sequence[Mapping[str, Any]],
    start: datetime,
    days: int,
    segments: Mapping[str, Segment],
    seed: int = 7,
) -> list[dict[str, Any]]:
    """For each manual segment a scenario starts on, half the contacts join it at random
    instants of the first half of the run; when a scenario starts on leaving it, half of those
    leave it later. Each item: {segment, contact, change, at}."""
    rng = random.Random(seed + 2)
    span = timedelta(days=max(days, 1)) / 2
    planned: list[dict[str, Any]] = []
    for segment_id, changes in sorted(_segment_triggers(scenarios).items()):
        if segment_id not in segments or not segments[segment_id].is_manual:
            continue
        for contact in contacts:
            if rng.random() >= 0.5:
                continue
            joined = start + span * rng.random()
            item = {"segment": segment_id, "contact": contact["external_id"]}
            planned.append({**item, "change": "entered", "at": joined})
            if "exited" in changes and rng.random() < 0.5:
                left = joined + timedelta(hours=rng.uniform(1, span.total_seconds() / 3600))
                planned.append({**item, "change": "exited", "at": left})
    return sorted(planned, key=lambda m: m["at"])


def apply_memberships(conn: Any, due: Sequence[Mapping[str, Any]], now: datetime) -> None:
    """Apply planned joins and leaves of manual segments, as an import would (history, count)."""
    wanted = {str(m["contact"]) for m in due}
    ids = dict(
        conn.execute(
            select(Contact.external_id, Contact.id).where(Contact.external_id.in_(wanted))
        ).all()
    )
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for m in due:
        if str(m["contact"]) in ids:
            groups[(str(m["segment"]), str(m["change"]))].append(ids[str(m["contact"])])
    for (segment_id, change), contact_ids in sorted(groups.items()):
        joining = select(Contact.id.label("id")).where(Contact.id.in_(contact_ids))
        query = joining if change == "entered" else joining.where(false())
        replace_members(conn, segment_id, query, now, scope=contact_ids, reason="simulation")


def segment_entries(conn: Any) -> dict[str, dict[str, int]]:
    """Entries by segment trigger: a segment entry's key names the history row that fired it."""
    keyed = conn.execute(
        select(Enrollment.scenario_id, Enrollment.entry_key).where(
            Enrollment.entry_key.like("segment:%")
        )
    ).all()
    change_ids = sorted({int(key.split(":", 1)[1]) for _, key in keyed})
    changes: dict[int, str] = {}
    for at in range(0, len(change_ids), 500):
        for row in conn.execute(
            select(SegmentChange.id, SegmentChange.segment_id, SegmentChange.change).where(
                SegmentChange.id.in_(change_ids[at : at + 500])
            )
        ):
            changes[row.id] = f"segment_{row.change}:{row.segment_id}"
    counted: dict[str, Counter[str]] = defaultdict(Counter)
    for scenario_id, key in keyed:
        counted[scenario_id][changes.get(int(key.split(":", 1)[1]), "segment")] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(counted.items())}
