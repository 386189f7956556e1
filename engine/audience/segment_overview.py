"""What the command line and the API say about the workspace's segments: each one's kind and
member count now, its change since the last recorded day, its definition in words, a sample of
members and the count's trend.

The definitions come from the segment files (engine.spec.segments), the figures from stored
membership (engine.audience.membership); a file with errors is listed with them, never skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from engine.audience.membership import count_trend, history_table, members_table
from engine.errors import NotFound
from engine.spec.conditions import (
    OVERALL,
    All,
    Any_,
    AttributeTest,
    Condition,
    ConsentTest,
    EventTest,
    Expression,
    Not,
    PressureTest,
    PropertyFilter,
    SegmentTest,
    TagTest,
)
from engine.spec.problems import did_you_mean
from engine.spec.segments import (
    SEGMENTS_FOLDER,
    Segment,
    SegmentFolder,
    lint_segment_folder,
    lint_segment_text,
)
from engine.store.models import Contact

CONDITION, MANUAL = "condition", "manual"


@dataclass(frozen=True)
class SegmentSummary:
    """One line of the list: `problems` (file:line: message) when its file does not load."""

    id: str
    name: str
    kind: str | None  # condition | manual; None when the file does not say (it has errors)
    count: int
    change: int | None  # since the last recorded day before today; None: no earlier day
    file: str
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "count": self.count,
            "change": self.change,
            "file": self.file,
            "problems": self.problems,
        }


def segments_folder(scenarios_dir: Path) -> Path:
    return scenarios_dir / SEGMENTS_FOLDER


def workspace_segments(scenarios_dir: Path) -> SegmentFolder:
    """Every segment file of the workspace, linted together."""
    return lint_segment_folder(segments_folder(scenarios_dir))


def find_segment(folder: SegmentFolder, segment_id: str) -> Segment:
    """The loaded segment `segment_id`, or NotFound saying why (unknown, or its errors)."""
    if segment_id in folder.segments:
        return folder.segments[segment_id]
    ids = [f.stem for f in folder.files]
    if segment_id in ids:
        file = next(str(f) for f in folder.files if f.stem == segment_id)
        shown = "; ".join(_file_problems(folder, file)[:3]) or "see parcours lint"
        raise NotFound(f"segment '{segment_id}' has errors: {shown}")
    hint = did_you_mean(segment_id, ids) or (
        f"segments are: {', '.join(ids)}" if ids else "no segment files yet"
    )
    raise NotFound(f"no segment '{segment_id}' in {SEGMENTS_FOLDER}/ ({hint})")


def _file_problems(folder: SegmentFolder, file: str) -> list[str]:
    return [p.format() for p in folder.problems if p.file == file and p.severity == "error"]


def member_counts(conn: Connection) -> dict[str, int]:
    """Members now, per segment, in one grouped query."""
    m = members_table.c
    rows = conn.execute(select(m.segment_id, func.count()).group_by(m.segment_id))
    return {segment_id: int(n) for segment_id, n in rows}


def _change(trend: list[tuple[date, int]], now_count: int, today: date) -> int | None:
    before = [members for day, members in trend if day < today]
    return now_count - before[-1] if before else None


def summaries(conn: Connection, folder: SegmentFolder, now: datetime) -> list[SegmentSummary]:
    """Every segment file of the folder, by id, with its count and change."""
    counts = member_counts(conn)
    since = now.date() - timedelta(days=400)
    out = []
    for file in folder.files:
        segment = folder.segments.get(file.stem)
        problems = _file_problems(folder, str(file))
        count = counts.get(file.stem, 0)
        trend = count_trend(conn, file.stem, since)
        out.append(
            SegmentSummary(
                id=file.stem,
                name=segment.name if segment else "",
                kind=kind(segment) if segment else None,
                count=count,
                change=_change(trend, count, now.date()),
                file=str(file),
                problems=problems,
            )
        )
    return out


def kind(segment: Segment) -> str:
    return MANUAL if segment.is_manual else CONDITION


def sample(
    conn: Connection, segment_id: str, limit: int = 10, after: str | None = None
) -> list[str]:
    """External ids of members in contact order, `limit` of them after the member `after`."""
    m, c = members_table.c, Contact.__table__.c
    query = (
        select(c.external_id)
        .join_from(members_table, Contact.__table__, c.id == m.contact_id)
        .where(m.segment_id == segment_id)
        .order_by(m.contact_id)
        .limit(limit)
    )
    if after is not None:
        start = conn.execute(select(c.id).where(c.external_id == after)).scalar()
        if start is None:
            raise NotFound(f"no contact with external id '{after}'")
        query = query.where(m.contact_id > start)
    return [str(x) for x in conn.execute(query).scalars()]


def last_change(conn: Connection, segment_id: str) -> tuple[datetime, str] | None:
    """The latest entry or exit of the segment and why (rebuild, refresh, import...)."""
    h = history_table.c
    row = conn.execute(
        select(h.at, h.reason)
        .where(h.segment_id == segment_id)
        .order_by(h.at.desc(), h.id.desc())
        .limit(1)
    ).first()
    return (row.at, row.reason) if row else None


def details(
    conn: Connection, folder: SegmentFolder, segment_id: str, now: datetime, sample_size: int = 10
) -> dict[str, Any]:
    """Everything `segment show` and the API give about one segment (NotFound if unknown)."""
    segment = find_segment(folder, segment_id)
    file = next(f for f in folder.files if f.stem == segment_id)
    text = file.read_text(encoding="utf-8")
    data = lint_segment_text(text, str(file)).data
    raw = data.get(kind(segment)) if isinstance(data, Mapping) else None
    count = int(
        conn.execute(
            select(func.count()).where(members_table.c.segment_id == segment_id)
        ).scalar_one()
    )
    trend = count_trend(conn, segment_id)
    changed = last_change(conn, segment_id)
    return {
        "id": segment.id,
        "name": segment.name,
        "description": segment.description,
        "kind": kind(segment),
        "count": count,
        "change": _change(trend, count, now.date()),
        "definition": {
            "text": describe(segment.condition) if segment.condition else _manual_text(segment),
            kind(segment): raw,
            "yaml": text,
        },
        "manual_source": segment.manual_source,
        "sample": sample(conn, segment_id, sample_size),
        "trend": [{"day": day.isoformat(), "members": n} for day, n in trend],
        "last_change": {"at": changed[0].isoformat(), "reason": changed[1]} if changed else None,
        "file": str(file),
    }


def _manual_text(segment: Segment) -> str:
    if segment.manual_source:
        return f"the contacts listed in {segment.manual_source} (external_id column)"
    return "the contacts imported into the list"


# ------------------------------------------------------------------ in words

_OPS = {
    "eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "in": "in",
    "not_in": "not in", "contains": "contains", "not_contains": "does not contain",
    "starts_with": "starts with", "ends_with": "ends with", "older_than": "older than",
    "within_last": "within the last",
}  # fmt: skip


def _value(value: Any) -> str:
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _test(name: str, op: str, value: Any) -> str:
    if op == "exists":
        return f"{name} is set"
    if op == "not_exists":
        return f"{name} is not set"
    return f"{name} {_OPS.get(op, op)} {_value(value)}"


def _filters(where: tuple[PropertyFilter, ...]) -> str:
    return " and ".join(_test(f.property, f.op, f.value) for f in where)


def _event(cond: EventTest) -> str:
    if cond.measure == "sum":
        text = f"sum of {cond.event}.{cond.sum_property} {_OPS.get(cond.op, cond.op)}"
        text += f" {_value(cond.value)}"
    elif cond.measure == "recency":
        text = f"last {cond.event} {_OPS.get(cond.op, cond.op)} {_value(cond.value)}"
    else:
        text = f"{cond.event} count {_OPS.get(cond.op, cond.op)} {_value(cond.value)}"
    if cond.where:
        text += f" (where {_filters(cond.where)})"
    if cond.within is not None:
        text += f" in the last {_duration(cond.within)}"
    if cond.since_entry:
        text += " since entry"
    return text


def describe(cond: Condition) -> str:
    """A condition in one readable line: `all of (a; b)`, `country = 'FR'`, `segment premium`."""
    if isinstance(cond, All | Any_):
        word = "all of" if isinstance(cond, All) else "any of"
        return f"{word} (" + "; ".join(describe(c) for c in cond.items) + ")"
    if isinstance(cond, Not):
        return f"not ({describe(cond.item)})"
    if isinstance(cond, AttributeTest):
        return _test(cond.attribute, cond.op, cond.value)
    if isinstance(cond, TagTest):
        return f"tagged {cond.tag!r}"
    if isinstance(cond, EventTest):
        return _event(cond)
    if isinstance(cond, ConsentTest):
        topic = "every topic" if cond.topic == OVERALL else cond.topic
        return f"{cond.channel} consent for {topic} is {cond.state}"
    if isinstance(cond, PressureTest):
        channel = "overall" if cond.channel == OVERALL else cond.channel
        return f"{channel} pressure is {cond.state}"
    if isinstance(cond, SegmentTest):
        return f"member of segment {cond.segment}"
    if isinstance(cond, Expression):
        return f"expression {cond.source!r}"
    return type(cond).__name__
