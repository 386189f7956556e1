"""What puts contacts into scenarios and wakes them: new events, cron schedules, anniversaries.

Each pass is idempotent: events leave the inbox in the transaction that acts on them; a schedule
firing is a unique row with a fan-out cursor (a crash mid fan-out resumes where it stopped); an
anniversary entry's key is the occurrence date.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql import Select

from engine.audience.changes import PRESSURE, event_kind, mark_changed
from engine.policy.model import Policy
from engine.policy.pressure import record_signals
from engine.runtime.state import ATTRIBUTABLE
from engine.runtime.timing import next_anniversary, zone_for
from engine.spec.conditions import matches_all
from engine.spec.cron import cron_for
from engine.spec.model import (
    SEGMENT_TRIGGERS,
    AnniversaryTrigger,
    EventTrigger,
    Scenario,
    ScheduleTrigger,
    is_amount,
)
from engine.store.models import (
    Contact,
    Cursor,
    Enrollment,
    Event,
    EventInbox,
    JournalEntry,
    ScheduleFiring,
)
from engine.worker.enroll import (
    Candidate,
    audience_sql,
    chunk_end,
    contact_views,
    enroll,
    enroll_range,
)

logger = logging.getLogger(__name__)
# Contacts per fan-out transaction (a schedule's fan-out commits its cursor with each chunk).
FANOUT_CHUNK = 5000
ANNIVERSARY_CHUNK = 1000
# A tombstone (merged or erased) is never enrolled: the fan-outs skip it.
LIVE = (Contact.merged_into.is_(None), Contact.erased_at.is_(None))
Live = list[tuple[int, Scenario]]


SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])


def _locking(conn: Connection, stmt: SelectT) -> SelectT:
    if conn.dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True)
    return stmt


def process_events(
    conn: Connection,
    live: Live,
    now: datetime,
    max_age: timedelta = timedelta(hours=24),
    limit: int = 1000,
    scenario_of: Callable[[int], Scenario] | None = None,
    policy: Policy | None = None,
    segments_read: Callable[[str], bool] | None = None,
) -> dict[str, int]:
    """Enroll contacts from new events and wake the enrollments that listen to them.

    An event older than `max_age` (an imported history, say) still wakes waiting enrollments and
    feeds conditions, but starts no journey: importing last year's orders must not send today.
    An event of a kind `segments_read` says a segment reads goes to the segments' change feed.
    """
    ids = (
        conn.execute(
            _locking(conn, select(EventInbox.event_id).order_by(EventInbox.event_id).limit(limit))
        )
        .scalars()
        .all()
    )  # type: ignore[call-overload]
    if not ids:
        return {}
    events = conn.execute(
        select(Event.id, Event.contact_id, Event.name, Event.properties, Event.occurred_at)
        .where(Event.id.in_(ids))
        .order_by(Event.id)
    ).all()
    candidates = []
    listeners: dict[str, set[int]] = defaultdict(set)
    for version_id, scenario in live:
        for name in scenario.listened_events():
            listeners[name].add(version_id)
    wake: dict[int, set[int]] = defaultdict(set)  # contact → versions
    for e in events:
        too_old = now - e.occurred_at > max_age
        for version_id, scenario in [] if too_old else live:
            for trig in scenario.triggers:
                if isinstance(trig, SEGMENT_TRIGGERS):
                    # entering or leaving a segment is a membership change, not an event:
                    # engine.audience fires these, whatever event changed the membership
                    continue
                if (
                    isinstance(trig, EventTrigger)
                    and trig.event == e.name
                    and matches_all(trig.where, e.properties or {}, now)
                ):
                    candidates.append(
                        Candidate(
                            version_id,
                            scenario,
                            e.contact_id,
                            f"event:{e.id}",
                            now,
                            e.id,
                            "event",
                            min(e.occurred_at, now),
                        )
                    )
        if e.name in listeners:
            wake[e.contact_id] |= listeners[e.name]
    if segments_read is not None:
        kinds = [(e.contact_id, event_kind(e.name)) for e in events]
        mark_changed(conn, [(c, k) for c, k in kinds if segments_read(k)], now)
    # Running enrollments on older versions listen too: wake every active one of those contacts.
    woken = 0
    if wake:
        woken = conn.execute(
            update(Enrollment)
            .where(
                Enrollment.contact_id.in_(list(wake)),
                Enrollment.status == "active",
                (Enrollment.due_at.is_(None)) | (Enrollment.due_at > now),
            )
            .values(due_at=now)
        ).rowcount
    deferred: set[int] = set()
    counts = dict(
        enroll(conn, candidates, now, deferred, policy.pressure if policy is not None else None)
    )
    goal_names = {sc.goal.event for _, sc in live if sc.goal is not None}
    goal_events = [e for e in events if e.name in goal_names]
    if scenario_of is not None and goal_events:
        counts["converted_after_end"] = attribute_goals(conn, goal_events, scenario_of, now)
    # An event refused only because the same pass just enrolled the contact (two signals at
    # once) stays in the inbox: the next pass gives it its turn.
    done = [i for i in ids if i not in deferred]
    if done:
        conn.execute(delete(EventInbox).where(EventInbox.event_id.in_(done)))
    if policy is not None and policy.pressure.signals:
        # Engagement and complaints move the barometer; a deferred event counts when it is done.
        finished = set(done)
        signals = [(e.contact_id, e.name, e.properties, e.occurred_at) for e in events
                   if e.id in finished and e.name in policy.pressure.signals]  # fmt: skip
        if signals:
            # Same per-contact lock as the gate's batches, which reuse the barometers they read.
            from engine.policy.locks import lock_contacts

            lock_contacts(conn, [c for c, *_ in signals])
            record_signals(conn, signals, now, policy)
            if segments_read is not None and segments_read(PRESSURE):
                mark_changed(conn, [(c, PRESSURE) for c, *_ in signals], now)
    counts["events"] = len(done)
    counts["deferred_events"] = len(deferred)
    counts["woken"] = woken
    return counts


def attribute_goals(
    conn: Connection, events: Sequence[Row[Any]], scenario_of: Callable[[int], Scenario],
    now: datetime,
) -> int:  # fmt: skip
    """Convert journeys that ran their course when the goal comes inside its window afterwards."""
    by_contact: dict[int, list[Row[Any]]] = defaultdict(list)
    for e in events:
        by_contact[e.contact_id].append(e)
    rows = conn.execute(
        select(Enrollment.id, Enrollment.version_id, Enrollment.contact_id, Enrollment.scenario_id,
               Enrollment.entered_at, Enrollment.vars, Enrollment.trigger_event_id,
               Enrollment.step_id)
        .where(Enrollment.contact_id.in_(list(by_contact)),
               Enrollment.status.in_(("completed", "exited")))
    ).all()  # fmt: skip
    converted = 0
    for r in rows:
        if not (r.vars or {}).get(ATTRIBUTABLE):
            continue
        goal = scenario_of(r.version_id).goal
        if goal is None or goal.within is None:
            continue
        for e in by_contact[r.contact_id]:
            if (e.name == goal.event and e.id != r.trigger_event_id
                    and r.entered_at <= e.occurred_at <= r.entered_at + goal.within
                    and matches_all(goal.where, e.properties or {}, now)):  # fmt: skip
                vars_ = {k: v for k, v in (r.vars or {}).items() if k != ATTRIBUTABLE}
                conn.execute(update(Enrollment).where(Enrollment.id == r.id).values(
                    status="converted", end_reason=f"goal:{goal.event}", vars=vars_))  # fmt: skip
                data: dict[str, Any] = {"event_id": e.id, "after_end": True}
                if goal.value is not None and is_amount((e.properties or {}).get(goal.value)):
                    data["value"] = e.properties[goal.value]  # the revenue, for the KPIs
                if vars_.get("variant"):
                    data["variant"] = vars_["variant"]
                conn.execute(insert(JournalEntry).values(
                    at=now, kind="converted", enrollment_id=r.id, contact_id=r.contact_id,
                    scenario_id=r.scenario_id, version_id=r.version_id, step_id=r.step_id,
                    reason=f"goal:{goal.event}", data=data))  # fmt: skip
                converted += 1
                break
    return converted


def schedule_trigger(scenario: Scenario) -> ScheduleTrigger | None:
    return next((t for t in scenario.triggers if isinstance(t, ScheduleTrigger)), None)


def next_fire_time(trigger: ScheduleTrigger, after: datetime) -> datetime | None:
    """The first firing strictly after `after` (APScheduler's cron arithmetic, DST-aware)."""
    fire = cron_for(trigger).get_next_fire_time(None, after + timedelta(microseconds=1))
    return fire.astimezone(UTC) if fire else None


def fire_schedules(conn: Connection, live: Live, now: datetime) -> dict[str, int]:
    """Record due firings: one row per scenario and fire time, ever (the fan-out comes after)."""
    counts: dict[str, int] = defaultdict(int)
    for version_id, scenario in live:
        trig = schedule_trigger(scenario)
        if trig is None:
            continue
        last = conn.execute(
            select(func.max(ScheduleFiring.fire_at)).where(
                ScheduleFiring.scenario_id == scenario.id
            )
        ).scalar()
        start = last or _published_at(conn, version_id)
        # After downtime only the latest missed firing runs: one newsletter, not five.
        due, fire = None, next_fire_time(trig, start)
        while fire is not None and fire <= now:
            due, fire = fire, next_fire_time(trig, fire)
        if due is not None:
            stmt = _insert_ignore_firing(conn).values(
                scenario_id=scenario.id,
                fire_at=due,
                created_at=now,
                status="pending",
                version_id=version_id,
                cursor=0,
            )
            if conn.execute(stmt).rowcount:
                counts["firings"] += 1
    return counts


def fan_out(conn: Connection, live: Live, now: datetime) -> dict[str, int]:
    """Enroll the next chunk of contacts of the oldest pending firing; {} when none is pending,
    ``{"fan_out_held": 1}`` when the pending one is another worker's for the moment.

    Each chunk commits with the firing's cursor, so a crash mid fan-out resumes where it stopped
    (and the entry key makes a repeated chunk harmless). Only one worker fans a firing out at once.
    """
    firing = conn.execute(
        _locking(
            conn,
            select(
                ScheduleFiring.id,
                ScheduleFiring.version_id,
                ScheduleFiring.fire_at,
                ScheduleFiring.cursor,
            )
            .where(ScheduleFiring.status == "pending")
            .order_by(ScheduleFiring.id)
            .limit(1),
        )
    ).first()
    if firing is None:
        # Skipped because another worker holds it (it is fanning a chunk out): still pending,
        # so this worker takes a later chunk rather than leave the rest to that one alone.
        held = (
            conn.dialect.name == "postgresql"
            and conn.execute(
                select(ScheduleFiring.id).where(ScheduleFiring.status == "pending").limit(1)
            ).first()
        )
        return {"fan_out_held": 1} if held else {}
    by_version: dict[int, Scenario] = dict(live)
    target = by_version.get(firing.version_id) if firing.version_id else None
    if target is None or firing.version_id is None:  # paused or replaced since: firing is over
        conn.execute(
            update(ScheduleFiring).where(ScheduleFiring.id == firing.id).values(status="cancelled")
        )
        return {"cancelled": 1}
    key = f"schedule:{firing.fire_at.isoformat()}"
    audience = audience_sql(target, now, conn.dialect.name)
    if audience is not None:  # set-based: one INSERT … SELECT per chunk
        upto, found = chunk_end(conn, firing.cursor, FANOUT_CHUNK)
        entered = enroll_range(conn, firing.version_id, target, audience, firing.cursor, upto,
                               key, now) if found else 0  # fmt: skip
        counts = {"entered": entered, "not_entered": found - entered}
    else:  # an audience only Python can evaluate
        ids = (
            conn.execute(
                select(Contact.id)
                .where(Contact.id > firing.cursor, *LIVE)
                .order_by(Contact.id)
                .limit(FANOUT_CHUNK)
            )
            .scalars()
            .all()
        )
        upto, found = (ids[-1] if ids else firing.cursor), len(ids)
        candidates = [
            Candidate(firing.version_id, target, cid, key, now, None, "schedule") for cid in ids
        ]
        counts = dict(enroll(conn, candidates, now))
    values: dict[str, Any] = {"cursor": upto} if found else {}
    if found < FANOUT_CHUNK:
        values["status"] = "done"
    conn.execute(update(ScheduleFiring).where(ScheduleFiring.id == firing.id).values(**values))
    counts["fanned_out"] = found or 1  # non-zero: this call did work
    return counts


def _published_at(conn: Connection, version_id: int) -> datetime:
    from engine.store.models import ScenarioVersion

    return conn.execute(
        select(ScenarioVersion.published_at).where(ScenarioVersion.id == version_id)
    ).scalar_one()


def _insert_ignore_firing(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(ScheduleFiring).on_conflict_do_nothing(
            index_elements=["scenario_id", "fire_at"]
        )
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(ScheduleFiring).on_conflict_do_nothing()


def plan_anniversaries(
    conn: Connection,
    live: Live,
    now: datetime,
    default_zone: str,
    every: timedelta,
    lookahead: timedelta,
) -> dict[str, int]:
    """Enroll, ahead of time, contacts whose anniversary falls within `lookahead`."""
    counts: dict[str, int] = defaultdict(int)
    for version_id, scenario in live:
        trig = next((t for t in scenario.triggers if isinstance(t, AnniversaryTrigger)), None)
        if trig is None:
            continue
        name = f"anniversary:{scenario.id}"
        last = conn.execute(select(Cursor.value).where(Cursor.name == name)).scalar()
        if last is not None and now.timestamp() - last < every.total_seconds():
            continue
        since = datetime.fromtimestamp(last, UTC) if last is not None else now
        candidates = []
        after = 0
        while True:
            ids = (
                conn.execute(
                    select(Contact.id)
                    .where(Contact.id > after, *LIVE)
                    .order_by(Contact.id)
                    .limit(ANNIVERSARY_CHUNK)
                )
                .scalars()
                .all()
            )
            if not ids:
                break
            after = ids[-1]
            for contact in contact_views(conn, ids).values():
                value = contact.attributes.get(trig.attribute)
                zone = zone_for(contact.timezone, default_zone)
                found = next_anniversary(value, trig.offset, trig.at, zone, since)
                if found is None or found[0] > now + lookahead:
                    continue
                instant, occurrence = found
                candidates.append(
                    Candidate(
                        version_id,
                        scenario,
                        contact.id,
                        f"anniversary:{occurrence.isoformat()}",
                        instant,
                        None,
                        "anniversary",
                    )
                )
            if len(candidates) >= ANNIVERSARY_CHUNK:
                for k, v in enroll(conn, candidates, now).items():
                    counts[k] += v
                candidates = []
        for k, v in enroll(conn, candidates, now).items():
            counts[k] += v
        _set_cursor(conn, name, int(now.timestamp()), now)
    return counts


def _set_cursor(conn: Connection, name: str, value: int, now: datetime) -> None:
    updated = conn.execute(
        update(Cursor).where(Cursor.name == name).values(value=value, updated_at=now)
    ).rowcount
    if not updated:
        conn.execute(insert(Cursor).values(name=name, value=value, updated_at=now))
