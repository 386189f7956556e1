"""Entering contacts into scenarios: audience, entry rules, idempotent insert.

A candidate is (scenario, contact, entry key). The entry key makes every entry idempotent: the same
event, schedule firing or anniversary never enrolls a contact twice, whichever worker retries it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, func, insert, literal, select
from sqlalchemy.engine import Connection

from engine.audience.attributes import VIEW_COLUMNS, VIEW_JOINS, VIEW_SELECT, metrics_view
from engine.policy.model import PressureConfig
from engine.runtime.state import ACTIVE, ContactView, EventView, History
from engine.spec.expressions import RenderError
from engine.spec.model import Scenario
from engine.store.models import Contact, Enrollment, Event, JournalEntry

_FRESH = "entered in this call"


@dataclass(frozen=True)
class Candidate:
    version_id: int
    scenario: Scenario
    contact_id: int
    entry_key: str
    due_at: datetime
    trigger_event_id: int | None = None
    source: str = "event"
    entered_at: datetime | None = (
        None  # default: due_at; an event entry starts when the event happened
    )


class _AudienceCtx:
    def __init__(
        self, contact: ContactView, history: History, now: datetime, scenario: Scenario
    ) -> None:
        self.contact = contact
        self.now = now
        self.entered_at: datetime | None = None
        self.event: EventView | None = None
        self._history = history
        self._scenario = scenario

    def events(self, name: str) -> Sequence[EventView]:
        return self._history.events(name)

    def expression_vars(self) -> dict[str, Any]:
        return {
            "contact": self.contact.template_view(),
            "event": {},
            "now": self.now,
            "scenario": {"id": self._scenario.id, "name": self._scenario.name},
            "data": dict(self._scenario.data),
        }


def contact_views(conn: Connection, ids: Iterable[int]) -> dict[int, ContactView]:
    """Load live contacts as views with their segments, one query (read at driver level: it runs
    for every batch). A merged or erased contact gets no view."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    sqlite = conn.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    # the computed attributes and the segments come in the same statement, not one more query
    # per contact (segment ids are identifiers: never a comma in them)
    joined = "group_concat(s.segment_id, ',')" if sqlite else "string_agg(s.segment_id, ',')"
    sql = (
        "SELECT c.id, c.external_id, c.email, c.phone, c.timezone, c.locale, c.score, c.tags, "
        f"c.attributes, c.opted_out, (SELECT {joined} FROM segment_members s "
        f"WHERE s.contact_id = c.id) AS segments, {VIEW_SELECT} FROM contacts c {VIEW_JOINS} "
        f"WHERE c.id IN ({', '.join([mark] * len(wanted))}) "
        # a tombstone (merged or erased) has no view: nothing is ever decided or sent for it
        "AND c.merged_into IS NULL AND c.erased_at IS NULL"
    )
    out = {}
    for r in conn.exec_driver_sql(sql, tuple(wanted)).all():
        tags, attributes = r[7], r[8]
        # SQLite hands back JSON text; PostgreSQL's driver has already decoded JSONB.
        tags = json.loads(tags) if isinstance(tags, str) else tags
        attributes = json.loads(attributes) if isinstance(attributes, str) else attributes
        out[r[0]] = ContactView(r[0], r[1], r[2], r[3], r[4], r[5], r[6], list(tags or []),
                                dict(attributes or {}), bool(r[9]))  # fmt: skip
        out[r[0]].segments = frozenset(r[10].split(",")) if r[10] else frozenset()
        computed = dict(zip((*VIEW_COLUMNS, "lead_score"), r[11:], strict=True))
        out[r[0]].metrics = metrics_view(computed, r[6])
    return out


def histories(
    conn: Connection, contact_ids: Iterable[int], names: Iterable[str]
) -> dict[int, History]:
    """Events of the given names for the given contacts, oldest first, one query."""
    ids, wanted = list(set(contact_ids)), list(set(names))
    out: dict[int, dict[str, list[EventView]]] = defaultdict(lambda: defaultdict(list))
    if ids and wanted:
        rows = conn.execute(
            select(Event.id, Event.contact_id, Event.name, Event.properties, Event.occurred_at)
            .where(Event.contact_id.in_(ids), Event.name.in_(wanted))
            .order_by(Event.occurred_at, Event.id)
        )
        for r in rows:
            out[r.contact_id][r.name].append(
                EventView(r.id, r.name, r.properties or {}, r.occurred_at)
            )
    return {cid: History(dict(by_name)) for cid, by_name in out.items()}


def enroll(
    conn: Connection,
    candidates: Sequence[Candidate],
    now: datetime,
    deferred: set[int] | None = None,
    pressure: PressureConfig | None = None,
) -> dict[str, int]:
    """Apply audience and entry rules, insert the enrollments that pass; counts by outcome."""
    counts: dict[str, int] = defaultdict(int)
    if not candidates:
        return counts
    contact_ids = {c.contact_id for c in candidates}
    contacts = contact_views(conn, contact_ids)
    if any(c.scenario.reads_policy() for c in candidates):
        from engine.policy.pressure import load_policy_views

        load_policy_views(conn, contacts, now, pressure)
    audience_events: set[str] = set()
    for c in candidates:
        if c.scenario.audience is not None:
            audience_events |= c.scenario.history_events()
    history = histories(conn, contact_ids, audience_events)
    scenario_ids = {c.scenario.id for c in candidates}
    previous: dict[tuple[str, int], list[tuple[str, datetime]]] = defaultdict(list)
    keys: set[tuple[str, int, str]] = set()
    for r in conn.execute(
        select(
            Enrollment.scenario_id,
            Enrollment.contact_id,
            Enrollment.status,
            Enrollment.entered_at,
            Enrollment.entry_key,
        ).where(
            Enrollment.contact_id.in_(list(contact_ids)),
            Enrollment.scenario_id.in_(list(scenario_ids)),
        )
    ):
        previous[(r.scenario_id, r.contact_id)].append((r.status, r.entered_at))
        keys.add((r.scenario_id, r.contact_id, r.entry_key))
    rows, skipped = [], []
    for c in candidates:
        if (c.scenario.id, c.contact_id, c.entry_key) in keys:
            counts["duplicate"] += 1  # this very entry exists already: nothing to say
            continue
        prev = previous[(c.scenario.id, c.contact_id)]
        if (
            deferred is not None
            and c.trigger_event_id is not None
            and not c.scenario.entry.concurrent
            and any(status == _FRESH for status, _ in prev)
            and not any(status == ACTIVE for status, _ in prev)
        ):
            # Entered a moment ago by another event of this same pass: decide next pass, once
            # that enrollment has run, instead of refusing a signal that came at the same time.
            deferred.add(c.trigger_event_id)
            counts["deferred"] += 1
            continue
        keys.add((c.scenario.id, c.contact_id, c.entry_key))
        contact = contacts.get(c.contact_id)
        reason = _refusal(
            c,
            contact,
            history.get(c.contact_id, History()),
            previous[(c.scenario.id, c.contact_id)],
            now,
        )
        if reason:
            counts[reason] += 1
            if c.source != "schedule":  # a newsletter fan-out would flood the journal
                skipped.append(_journal(c, "skipped_entry", reason, now))
            continue
        prev.append((_FRESH, now))
        rows.append(
            {
                "scenario_id": c.scenario.id,
                "version_id": c.version_id,
                "contact_id": c.contact_id,
                "status": ACTIVE,
                "step_id": c.scenario.start,
                "due_at": c.due_at,
                "entry_key": c.entry_key,
                "trigger_event_id": c.trigger_event_id,
                "entered_at": c.entered_at or c.due_at,
                "visits": 0,
                "vars": {},
                "attempt": 0,
            }
        )
    if rows:
        stmt = _insert_ignore(conn).returning(
            Enrollment.id, Enrollment.scenario_id, Enrollment.contact_id, Enrollment.version_id
        )
        inserted = conn.execute(stmt, rows).all()
        counts["entered"] += len(inserted)
        counts["duplicate"] += len(rows) - len(inserted)
        journal = [
            {
                "at": now,
                "kind": "entered",
                "enrollment_id": r.id,
                "contact_id": r.contact_id,
                "scenario_id": r.scenario_id,
                "version_id": r.version_id,
                "step_id": None,
                "reason": None,
                "data": None,
            }
            for r in inserted
        ]
        if journal:
            conn.execute(insert(JournalEntry), journal)
    if skipped:
        conn.execute(insert(JournalEntry), skipped)
    return counts


def _insert_ignore(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(Enrollment).on_conflict_do_nothing(
            index_elements=["scenario_id", "contact_id", "entry_key"]
        )
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(Enrollment).on_conflict_do_nothing()


def _refusal(
    c: Candidate,
    contact: ContactView | None,
    history: History,
    previous: list[tuple[str, datetime]],
    now: datetime,
) -> str | None:
    if contact is None:
        return "contact_missing"
    rules = c.scenario.entry
    if previous:
        if not rules.concurrent and any(status in (ACTIVE, _FRESH) for status, _ in previous):
            return "already_active"
        if rules.reentry == "never":
            return "reentry_never"
        if rules.reentry == "cooldown" and rules.cooldown is not None:
            last = max(entered for _, entered in previous)
            if now - last < rules.cooldown:
                return "cooldown"
    if c.scenario.audience is None:
        return None
    try:
        inside = c.scenario.audience.evaluate(_AudienceCtx(contact, history, now, c.scenario))
    except RenderError:  # an expression over the render budget: no contact is in the audience
        return "audience_failed"
    return None if inside else "audience"


def _journal(c: Candidate, kind: str, reason: str, now: datetime) -> dict[str, Any]:
    return {
        "at": now,
        "kind": kind,
        "enrollment_id": None,
        "contact_id": c.contact_id,
        "scenario_id": c.scenario.id,
        "version_id": c.version_id,
        "step_id": None,
        "reason": reason,
        "data": {"entry_key": c.entry_key},
    }


def audience_sql(scenario: Scenario, now: datetime, dialect: str) -> Select[Any] | None:
    """The scenario's audience as `SELECT contacts.id`, or None when SQL cannot compute it (an
    expression): then its contacts are entered one chunk at a time by `enroll`."""
    from engine.audience.membership import stored_members
    from engine.audience.segment_sql import SegmentSQLError, compile_condition

    if scenario.audience is None:
        return select(Contact.id)
    try:
        return compile_condition(scenario.audience, now, stored_members, dialect=dialect)
    except SegmentSQLError:
        return None


def enroll_range(
    conn: Connection,
    version_id: int,
    scenario: Scenario,
    audience: Select[Any],
    after: int,
    upto: int,
    entry_key: str,
    now: datetime,
) -> int:
    """Enter the live contacts with ids in (after, upto] that pass the audience and the entry
    rules, set-based: one INSERT … SELECT, with its "entered" journal rows; how many entered.

    The same rules as `enroll` for a schedule candidate, written as SQL: a repeated entry key is
    ignored (a chunk redone after a crash enters nobody twice), an active enrollment refuses a
    non-concurrent entry, `reentry: never` refuses any previous one, a cooldown a recent one.
    Refusals are not journaled, as `enroll` does not journal them for a fan-out.
    """
    c = Contact.__table__.c
    mine = Enrollment.scenario_id == scenario.id
    before = select(Enrollment.id).where(mine, Enrollment.contact_id == c.id)
    rules = [c.id > after, c.id <= upto, c.merged_into.is_(None), c.erased_at.is_(None)]
    entry = scenario.entry
    if not entry.concurrent:
        rules.append(~exists(before.where(Enrollment.status == ACTIVE)))
    if entry.reentry == "never":
        rules.append(~exists(before))
    elif entry.reentry == "cooldown" and entry.cooldown is not None:
        rules.append(~exists(before.where(Enrollment.entered_at > now - entry.cooldown)))
    if scenario.audience is not None:
        rules.append(c.id.in_(audience.where(c.id > after, c.id <= upto).correlate(None)))
    columns = ("scenario_id", "version_id", "contact_id", "status", "step_id", "due_at",
               "entry_key", "entered_at", "visits", "vars", "attempt")  # fmt: skip
    t = Enrollment.__table__.c
    values = select(
        literal(scenario.id, t.scenario_id.type), literal(version_id, t.version_id.type), c.id,
        literal(ACTIVE, t.status.type), literal(scenario.start, t.step_id.type),
        literal(now, t.due_at.type), literal(entry_key, t.entry_key.type),
        literal(now, t.entered_at.type), literal(0), literal({}, t.vars.type), literal(0),
    ).where(*rules).order_by(c.id)  # fmt: skip
    stmt = (
        _insert_ignore(conn)
        .from_select(columns, values)
        .returning(Enrollment.id, Enrollment.contact_id)
    )
    journal_columns = ("at", "kind", "enrollment_id", "contact_id", "scenario_id", "version_id")
    j = JournalEntry.__table__.c
    if conn.dialect.name == "postgresql":
        # the journal rows come from the inserted rows inside the database: nothing to Python
        ins = stmt.cte("entered")
        rows = select(
            literal(now, j.at.type), literal("entered", j.kind.type), ins.c.id,
            ins.c.contact_id, literal(scenario.id, j.scenario_id.type),
            literal(version_id, j.version_id.type),
        )  # fmt: skip
        journaled = insert(JournalEntry).from_select(journal_columns, rows).cte("journaled")
        count = select(func.count()).select_from(ins).add_cte(journaled)
        return int(conn.execute(count).scalar_one())
    inserted = conn.execute(stmt).all()
    if inserted:
        conn.execute(insert(JournalEntry), [
            {"at": now, "kind": "entered", "enrollment_id": r.id, "contact_id": r.contact_id,
             "scenario_id": scenario.id, "version_id": version_id}
            for r in inserted
        ])  # fmt: skip
    return len(inserted)


def chunk_end(conn: Connection, after: int, size: int) -> tuple[int, int]:
    """The last id and the number of the next `size` live contacts after `after` ((after, 0)
    when none is left)."""
    ids = (
        select(Contact.id)
        .where(Contact.id > after, Contact.merged_into.is_(None), Contact.erased_at.is_(None))
        .order_by(Contact.id)
        .limit(size)
        .subquery()
    )
    last, count = conn.execute(select(func.max(ids.c.id), func.count()).select_from(ids)).one()
    return (last or after), count
