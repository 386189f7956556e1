"""One worker pass: new events, segment membership and its triggers, schedules, anniversaries,
then due enrollments in leased batches.

A batch is claimed in its own short transaction (lease + attempt number), then advanced and
written in one transaction: enrollment updates are fenced by the attempt number, sends are
reserved in the ledger under a unique send key, journal rows are appended. A worker killed at any
point loses nothing (the lease expires and another pass reclaims the batch) and sends nothing twice
(the send key).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from engine import metrics
from engine.audience.changes import PRESSURE, PROFILE, mark_changed
from engine.audience.segment_upkeep import SegmentUpkeep
from engine.config import Settings
from engine.insights.rollups import update_rollups
from engine.policy.base import Gate, OptOutGate
from engine.policy.model import Policy
from engine.policy.pressure import load_policy_views, record_sends
from engine.runtime.clock import Clock, SystemClock
from engine.runtime.interpreter import Interpreter, JournalRecord, Transition
from engine.runtime.state import FAILED, ContactView, EnrollmentState, EventView, History
from engine.spec.model import AnniversaryTrigger, Scenario
from engine.store.bulk import BulkWriter
from engine.store.models import Contact, Event, JournalEntry
from engine.worker.enroll import Candidate, contact_views, enroll, histories
from engine.worker.experiments import ExperimentUpkeep
from engine.worker.segment_triggers import FIRE_CHUNK, fire_changes, high_water, newest_change
from engine.worker.triggers import (
    fan_out,
    fire_schedules,
    next_fire_time,
    plan_anniversaries,
    process_events,
    schedule_trigger,
)
from engine.worker.versions import VersionCache

logger = logging.getLogger(__name__)
FANOUT_CHUNKS_PER_PASS = 100  # schedule fan-out per pass: up to 500,000 contacts, then due work
FIRE_CHUNKS_PER_PASS = 100  # membership changes fired per pass: up to 100,000, then due work
GateFactory = Callable[[Connection, dict[int, ContactView], datetime], Gate]


def _fault(point: str) -> None:
    """Crash on purpose at a named point (fault-injection tests): PARCOURS_FAULT_POINT=name[:n]."""
    wanted = os.environ.get("PARCOURS_FAULT_POINT")
    if not wanted:
        return
    name, _, after = wanted.partition(":")
    if name != point:
        return
    count = _FAULT_COUNTS[point] = _FAULT_COUNTS.get(point, 0) + 1
    if count >= int(after or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_COUNTS: dict[str, int] = {}
_GC_LOCK = threading.Lock()
_GC_STATE = {"holders": 0, "resume": False}


class _GcPaused:
    """The cycle collector paused while a batch runs, and resumed after it.

    A batch allocates tens of thousands of short-lived objects (rows, views, journal records):
    with the collector on, every 700 of them start a collection, and every tenth of those walks
    the older objects too, whose number grows with the heap: a quarter of a batch's time. Nearly
    all of a batch's garbage is freed by reference counting; what is left in cycles is collected
    as usual once the batch is done. Counted, so that threads running batches at once resume it
    only when the last one finishes (and never when it was off before).
    """

    def __enter__(self) -> None:
        with _GC_LOCK:
            if _GC_STATE["holders"] == 0:
                _GC_STATE["resume"] = gc.isenabled()
                gc.disable()
            _GC_STATE["holders"] += 1

    def __exit__(self, *exc: object) -> None:
        with _GC_LOCK:
            _GC_STATE["holders"] -= 1
            if _GC_STATE["holders"] == 0 and _GC_STATE["resume"]:
                gc.enable()


@dataclass
class PassReport:
    claimed: int = 0
    steps: int = 0
    sends: int = 0
    batches: int = 0
    stale: int = 0
    triggers: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def merge(self, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            self.triggers[key] += value


def _state(row: Claimed, trigger: EventView | None) -> EnrollmentState:
    return EnrollmentState(
        id=row.id,
        scenario_id=row.scenario_id,
        version_id=row.version_id,
        contact_id=row.contact_id,
        status=row.status,
        step_id=row.step_id,
        entered_at=row.entered_at,
        step_entered_at=row.step_entered_at,
        deadline=row.deadline,
        due_at=row.due_at,
        waiting_for=row.waiting_for,
        visits=row.visits,
        vars=row.vars or {},
        trigger_event=trigger,
    )


class Claimed(NamedTuple):
    """An enrollment leased by a claim, as the claim read it."""

    id: int
    scenario_id: str
    version_id: int
    contact_id: int
    status: str
    step_id: str | None
    entered_at: datetime
    step_entered_at: datetime | None
    deadline: datetime | None
    due_at: datetime | None
    waiting_for: str | None
    visits: int
    vars: dict[str, Any] | None
    trigger_event_id: int | None
    attempt: int


EVENTS_PER_CHUNK = 1000  # inbox rows read per transaction of the trigger pass


def _claim_sql(sqlite: bool, limit: int) -> str:
    """Lease the most overdue active enrollments not leased to anyone (a live lease is left
    alone), with a new attempt number for the fenced writes; SKIP LOCKED on PostgreSQL."""
    mark = "?" if sqlite else "%s"
    lock = "" if sqlite else " FOR UPDATE SKIP LOCKED"
    return (
        f"UPDATE enrollments SET lease_owner = {mark}, lease_until = {mark}, "
        "attempt = attempt + 1 WHERE id IN (SELECT id FROM enrollments "
        f"WHERE status = 'active' AND due_at <= {mark} "
        f"AND (lease_until IS NULL OR lease_until < {mark}) "
        f"ORDER BY due_at LIMIT {int(limit)}{lock}) "
        f"RETURNING {', '.join(Claimed._fields)}"
    )


def _claimed(raw: Sequence[Any], sqlite: bool) -> list[Claimed]:
    """The claim's rows in the models' forms: aware UTC instants, vars a dict."""
    when = _sqlite_at if sqlite else _utc
    out = []
    for r in raw:
        variables = r[12]
        if isinstance(variables, str):  # SQLite's JSON text; most enrollments carry none
            variables = {} if variables == "{}" else json.loads(variables)
        out.append(
            Claimed(
                r[0], r[1], r[2], r[3], r[4], r[5], cast(datetime, when(r[6])), when(r[7]),
                when(r[8]), when(r[9]), r[10], r[11], variables, r[13], r[14],
            )
        )  # fmt: skip
    return out


def _sqlite_at(value: str | None) -> datetime | None:
    # As engine.store.models.UTCDateTime reads SQLite's text: the wall time, in UTC.
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Worker:
    """Runs passes against one database. Several workers may run at once (PostgreSQL)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock | None = None,
        gate_factory: GateFactory | None = None,
        worker_id: str | None = None,
        delivering: Collection[str] = (),
    ) -> None:
        self.engine = engine
        # Channels with a real provider: their sends are queued for the delivery loop
        # (engine.delivery.loop); the others go to the outbox and are sent when recorded.
        self.delivering = frozenset(delivering)
        self.settings = settings
        self.clock = clock or SystemClock()
        self.gate_factory: GateFactory = gate_factory or (lambda conn, contacts, now: OptOutGate())
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.cache = VersionCache()
        self._interpreters: dict[int, Interpreter] = {}
        self._writer: BulkWriter | None = None
        self._next_fire: dict[int, datetime] = {}  # version id → next schedule firing
        self._next_scan: dict[int, datetime] = {}  # version id → next anniversary scan
        self._fanout_pending = True  # until a pass finds none (a firing may predate this worker)
        # The workspace policy, when the gate enforces one (the barometer follows it).
        self.policy: Policy | None = getattr(gate_factory, "policy", None)
        self._gate: Gate | None = None  # the current batch's gate
        self.segments = SegmentUpkeep(
            settings.scenarios_dir,
            timedelta(hours=settings.segments_rebuild_hours),
            self.policy.pressure if self.policy is not None else None,
        )
        self._fired_upto = -1  # the history id up to which membership changes were fired
        self.experiments = ExperimentUpkeep()  # bandit shares and automatic winners
        # A simulation, whose passes follow one another without pause, rolls up now and then
        # and once at the end rather than after every pass.
        self.rollup_interval = 0.0
        self._rolled_at = -float("inf")
        self.batches = 0  # committed by this worker, for its heartbeat
        # Set on SIGTERM: the batch in progress is written, no other batch is claimed.
        self.stopping = threading.Event()
        self._pass: tuple[datetime, float] | None = None  # the running pass's `now`, started

    # ------------------------------------------------------------------ a whole pass
    def run_once(self, now: datetime | None = None, max_batches: int | None = None) -> PassReport:
        """Everything due at `now`: events, schedules, anniversaries, then enrollments."""
        now = now or self.clock.now()
        self._pass = (now, time.monotonic())
        try:
            return self._run_pass(now, max_batches)
        finally:
            self._pass = None

    def _run_pass(self, now: datetime, max_batches: int | None) -> PassReport:
        report = PassReport()
        self.segments.watcher.current()  # the segment files, read again if they changed
        with self.engine.connect() as conn:
            live = self.cache.live(conn)
        if self.experiments.run_when_due(self.engine, live, now):  # a winner was published
            with self.engine.connect() as conn:
                live = self.cache.live(conn)
        while True:
            with self.engine.begin() as conn:
                counts = process_events(
                    conn,
                    live,
                    now,
                    timedelta(hours=self.settings.trigger_max_age_hours),
                    EVENTS_PER_CHUNK,
                    scenario_of=lambda version_id: self.cache.get(conn, version_id),
                    policy=self.policy,
                    segments_read=self.segments.reads,
                )
            report.merge(counts)
            metrics.events_read(counts.get("events", 0))
            # A partial chunk read the inbox as it was: events arriving meanwhile wait for the
            # next pass (their wake asks for it), so a steady flow cannot keep this pass from
            # the enrollments, the sends it has just made due among them.
            if counts.get("events", 0) < EVENTS_PER_CHUNK or counts.get("deferred_events"):
                break
        self._segments(live, now, report)
        self._schedules(live, now, report)
        self._anniversaries(live, now, report)
        while max_batches is None or report.batches < max_batches:
            if self.stopping.is_set():
                break
            claimed = self.process_batch(now, report)
            if claimed < self.settings.batch_size:
                break
        self._rollups(now, report)
        return report

    def _rollups(self, now: datetime, report: PassReport) -> None:
        """Add the pass's journal and events to the daily KPI rollups (cheap when idle); at
        most once per `rollup_interval` seconds of real time (0, the default: every pass)."""
        if self.rollup_interval:
            started = time.monotonic()
            if started - self._rolled_at < self.rollup_interval:
                return
            self._rolled_at = started
        try:
            report.merge({"kpi_rows": update_rollups(self.engine, self.settings.timezone, now)})
        except Exception:  # the cursors did not move: the rows are read again next pass
            logger.exception("KPI rollups failed; retrying at the next pass",
                             extra={"action": "rollups"})  # fmt: skip

    def _segments(
        self, live: list[tuple[int, Scenario]], now: datetime, report: PassReport
    ) -> None:
        """Keep membership live, then fire its entries and exits (engine.worker.segment_triggers).

        Idle, this asks the database three cheap questions: changes, contacts due, newest change.
        """
        try:
            report.merge(self.segments.run(self.engine, now))
        except Exception:
            # e.g. two workers' refreshes crossing on PostgreSQL: the changes stay, retried
            logger.exception("segment upkeep failed; retrying at the next pass",
                             extra={"action": "segments"})  # fmt: skip
        if newest_change(self.engine) <= self._fired_upto:
            return
        upto = high_water(self.engine)
        if upto is None:
            return  # a writer of membership is still committing: next pass
        max_age = timedelta(hours=self.settings.trigger_max_age_hours)
        manual = self.segments.manual()
        for _ in range(FIRE_CHUNKS_PER_PASS):
            with self.engine.begin() as conn:
                counts = fire_changes(
                    conn, live, upto, now, max_age,
                    scenario_of=lambda version_id: self.cache.get(conn, version_id),
                    manual=manual, compose=self.segments.compose_changes,
                )  # fmt: skip
            report.merge(counts)
            if counts.get("segment_changes", 0) < FIRE_CHUNK:
                self._fired_upto = upto  # all read (or another worker holds the cursor)
                return

    def _schedules(
        self, live: list[tuple[int, Scenario]], now: datetime, report: PassReport
    ) -> None:
        # The next fire time of each version is kept in memory so an idle pass asks nothing of the
        # database; the firing itself stays idempotent in the database for other workers.
        due = [
            (v, sc) for v, sc in live if schedule_trigger(sc) and self._next_fire.get(v, now) <= now
        ]
        if due:
            with self.engine.begin() as conn:
                counts = fire_schedules(conn, due, now)
            report.merge(counts)
            self._fanout_pending |= bool(counts.get("firings"))
            for version_id, scenario in due:
                trig = schedule_trigger(scenario)
                nxt = next_fire_time(trig, now) if trig else None
                self._next_fire[version_id] = nxt or now + timedelta(days=3650)
        for _ in range(FANOUT_CHUNKS_PER_PASS if self._fanout_pending else 0):
            with self.engine.begin() as conn:
                counts = fan_out(conn, live, now)
            report.merge(counts)
            if not counts or counts.get("fan_out_held"):
                self._fanout_pending = bool(counts)  # held: this worker tries again next pass
                break

    def _anniversaries(
        self, live: list[tuple[int, Scenario]], now: datetime, report: PassReport
    ) -> None:
        due = [
            (v, sc) for v, sc in live if _has_anniversary(sc) and self._next_scan.get(v, now) <= now
        ]
        if not due:
            return
        every = timedelta(seconds=self.settings.anniversary_every_seconds)
        with self.engine.begin() as conn:
            report.merge(
                plan_anniversaries(
                    conn,
                    due,
                    now,
                    self.settings.timezone,
                    every,
                    timedelta(hours=self.settings.anniversary_lookahead_hours),
                )
            )
        for version_id, _ in due:
            # Another worker may have scanned: look again a little later, never much later.
            self._next_scan[version_id] = now + min(every, timedelta(minutes=5))

    # ------------------------------------------------------------------ one batch
    def claim(self, now: datetime) -> list[Claimed]:
        """Lease up to batch_size due enrollments to this worker (committed at once)."""
        # Driver level, like the batch's writes (engine.store.bulk): the statement runs for
        # every batch, and SQLAlchemy's per-value result processing cost more than the claim.
        # Due at the pass's `now`, leased from the time the pass has run: a pass longer than a
        # lease would otherwise hand out leases already over, and another worker would redo
        # the batch (fenced: nothing twice, but the work done twice).
        current = self._running_time(now)
        lease_until = current + timedelta(seconds=self.settings.lease_seconds)
        with self.engine.begin() as conn:
            bulk = self._bulk(conn)
            at, _ = bulk.converters()
            sqlite = bulk.sqlite
            raw = conn.exec_driver_sql(
                _claim_sql(sqlite, self.settings.batch_size),
                (self.worker_id, at(lease_until), at(now), at(current)),
            ).fetchall()
        return _claimed(raw, sqlite)

    def _running_time(self, now: datetime) -> datetime:
        """`now` moved on by the real time the pass started at `now` has run so far."""
        if self._pass is None or self._pass[0] != now:
            return now
        return now + timedelta(seconds=time.monotonic() - self._pass[1])

    def _bulk(self, conn: Connection) -> BulkWriter:
        if self._writer is None:
            self._writer = BulkWriter(conn.dialect.name)
        return self._writer

    def interpreter(self, conn: Connection, version_id: int, gate: Gate) -> Interpreter:
        scenario = self.cache.get(conn, version_id)
        it = self._interpreters.get(version_id)
        if it is None:
            it = self._interpreters[version_id] = Interpreter(
                scenario, gate, self.settings.timezone
            )
        it.gate = gate
        it.arm_shares = self.experiments.shares_of(scenario.id)
        return it

    def process_batch(self, now: datetime, report: PassReport | None = None) -> int:
        """Claim one batch and advance it; returns how many enrollments were claimed."""
        with _GcPaused():
            return self._process_batch(now, report if report is not None else PassReport())

    def _process_batch(self, now: datetime, report: PassReport) -> int:
        started = time.monotonic()
        rows = self.claim(now)
        _fault("after_claim")
        if not rows:
            return 0
        try:
            transitions = self._advance_and_save(rows, now)
        except _StaleBatch:
            # Another worker took over part of this batch (our lease ran out): nothing was written.
            report.stale += len(rows)
            metrics.batch_stale()
            logger.warning(
                "stale batch of %d dropped by fencing",
                len(rows),
                extra={"action": "stale_fencing_token"},
            )
            return len(rows)
        _fault("after_commit")
        self.batches += 1
        metrics.batch_committed((t for _, t in transitions), self.delivering,
                                time.monotonic() - started)  # fmt: skip
        report.claimed += len(rows)
        report.batches += 1
        report.steps += sum(t.steps_run for _, t in transitions)
        report.sends += sum(len(t.sends) for _, t in transitions)
        return len(rows)

    def _advance_and_save(
        self, rows: Sequence[Claimed], now: datetime
    ) -> list[tuple[Claimed, Transition]]:
        with self.engine.begin() as conn:
            contacts = contact_views(conn, (r.contact_id for r in rows))
            # What depends on the version only is looked up once per version, not once per row.
            scenarios = {v: self.cache.get(conn, v) for v in {r.version_id for r in rows}}
            if self.policy is not None and any(sc.reads_policy() for sc in scenarios.values()):
                load_policy_views(conn, contacts, now, self.policy.pressure)
            gate = self._gate = self.gate_factory(conn, contacts, now)
            names: set[str] = set()
            for scenario in scenarios.values():
                names |= scenario.history_events()
            history = histories(conn, contacts, names)
            triggers = self._trigger_events(
                conn, [r.trigger_event_id for r in rows if r.trigger_event_id]
            )
            interpreters = {v: self.interpreter(conn, v, gate) for v in scenarios}
            transitions: list[tuple[Claimed, Transition]] = []
            # Arbitration: when journeys compete for a contact's last slot in this batch, the
            # higher scenario priority asks the gate first (then the longest waiting).
            ordered = (
                sorted(rows, key=lambda r: -scenarios[r.version_id].priority)
                if len(scenarios) > 1
                else rows
            )
            no_history = History()
            for row in ordered:
                trigger = (
                    None if row.trigger_event_id is None else triggers.get(row.trigger_event_id)
                )
                state = _state(row, trigger)
                contact = contacts.get(row.contact_id)
                if contact is None:  # erased since it entered: end it rather than retry forever
                    transitions.append((row, _failed(state, "contact_missing", now)))
                    continue
                try:
                    it = interpreters[row.version_id]
                    tr = it.advance(state, contact, history.get(row.contact_id, no_history), now)
                except Exception as exc:
                    # One broken enrollment must not hold back (or roll back) its whole batch.
                    logger.exception(
                        "enrollment %d failed", row.id,
                        extra={"action": "advance", "enrollment_id": row.id},
                    )  # fmt: skip
                    tr = _failed(state, "internal_error", now, {"error": type(exc).__name__})
                transitions.append((row, tr))
            if self._save(conn, transitions, contacts, now) < len(transitions):
                raise _StaleBatch
            _fault("before_commit")
        return transitions

    def _trigger_events(self, conn: Connection, ids: Sequence[int]) -> dict[int, EventView]:
        if not ids:
            return {}
        rows = conn.execute(
            select(Event.id, Event.name, Event.properties, Event.occurred_at).where(
                Event.id.in_(list(set(ids)))
            )
        )
        return {r.id: EventView(r.id, r.name, r.properties or {}, r.occurred_at) for r in rows}

    # ------------------------------------------------------------------ writing
    def _save(
        self,
        conn: Connection,
        transitions: list[tuple[Claimed, Transition]],
        contacts: dict[int, ContactView],
        now: datetime,
    ) -> int:
        bulk = self._bulk(conn)
        at, js = bulk.converters()
        now_at = at(now)
        updates: list[tuple[Any, ...]] = []
        sends: list[tuple[Any, ...]] = []
        journal: list[tuple[Any, ...]] = []
        changed: dict[int, int] = defaultdict(int)  # contact → score delta
        touched: set[int] = set()
        starts: list[tuple[Transition, str]] = []
        for row, tr in transitions:
            s = tr.state
            # Column order: engine.store.bulk.ENROLLMENT_COLUMNS, then id and attempt.
            updates.append((
                s.status, s.step_id, at(s.step_entered_at), at(s.deadline), at(s.due_at),
                s.waiting_for, s.visits, js(s.vars), at(s.ended_at), s.end_reason, s.id,
                row.attempt,
            ))  # fmt: skip
            for rec in tr.journal:  # JOURNAL_COLUMNS
                journal.append((
                    now_at, rec.kind, s.id, s.contact_id, s.scenario_id, s.version_id,
                    rec.step_id, rec.reason, js(rec.data),
                ))  # fmt: skip
            for eff in tr.sends:  # SEND_COLUMNS
                req = eff.request
                payload: dict[str, Any] = {"parts": dict(eff.parts)}
                if eff.metadata:
                    payload["meta"] = dict(eff.metadata)
                if req.channel in self.delivering:
                    status, provider, attempts, sent_at = "queued", None, 0, None
                else:
                    status, provider, attempts, sent_at = (
                        "sent",
                        f"outbox:{req.send_key}",
                        1,
                        now_at,
                    )
                sends.append((
                    req.send_key, s.id, s.contact_id, req.scenario_id, req.version_id,
                    req.step_id, req.channel, req.topic, req.kind, status, js(payload),
                    provider, attempts, now_at, sent_at,
                ))  # fmt: skip
            if tr.profile:
                touched.add(s.contact_id)
                changed[s.contact_id] += tr.profile.score_delta
            starts.extend((tr, target) for target in tr.starts)
        saved = bulk.save_enrollments(conn, updates)
        if saved < len(updates):
            return saved
        bulk.insert_sends(conn, sends)
        policy = self.policy
        if policy is not None:
            # Transactional sends weigh on the contact too: never blocked, but they count.
            weighed = [
                (tr.state.contact_id, eff.request.channel, now)
                for _, tr in transitions
                for eff in tr.sends
            ]
            if weighed:
                loaded = getattr(self._gate, "barometers", None)
                record_sends(conn, weighed, now, policy, loaded)
        bulk.insert_journal(conn, journal)
        feed = [(c, PROFILE) for c in touched] if self.segments.reads(PROFILE) else []
        if sends and self.segments.reads(PRESSURE):
            feed += [(tr.state.contact_id, PRESSURE) for _, tr in transitions if tr.sends]
        mark_changed(conn, feed, now)
        for contact_id in touched:
            view = contacts[contact_id]
            conn.execute(
                update(Contact)
                .where(Contact.id == contact_id)
                .values(
                    attributes=view.attributes,
                    tags=view.tags,
                    score=Contact.score + changed[contact_id],
                    updated_at=now,
                )
            )
        if starts:
            self._start_scenarios(conn, starts, now)
        return saved

    def _start_scenarios(
        self, conn: Connection, starts: list[tuple[Transition, str]], now: datetime
    ) -> None:
        live: dict[str, tuple[int, Scenario]] = {
            sc.id: (vid, sc) for vid, sc in self.cache.live(conn)
        }
        candidates = []
        for tr, target in starts:
            if target not in live:
                conn.execute(
                    insert(JournalEntry).values(
                        at=now,
                        kind="error",
                        enrollment_id=tr.state.id,
                        contact_id=tr.state.contact_id,
                        scenario_id=tr.state.scenario_id,
                        version_id=tr.state.version_id,
                        step_id=tr.state.step_id,
                        reason="start_scenario:not_live",
                        data={"scenario": target},
                    )
                )
                continue
            vid, scenario = live[target]
            key = f"from:{tr.state.scenario_id}:{tr.state.id}:{tr.state.visits}"
            candidates.append(
                Candidate(vid, scenario, tr.state.contact_id, key, now, None, "scenario")
            )
        enroll(conn, candidates, now)


def _failed(
    state: EnrollmentState, reason: str, now: datetime, data: dict[str, Any] | None = None
) -> Transition:
    ended = state.evolve(status=FAILED, end_reason=reason, ended_at=now, due_at=None, deadline=None)
    return Transition(ended, journal=[JournalRecord("failed", state.step_id, reason, data)])


def _has_anniversary(scenario: Scenario) -> bool:
    return any(isinstance(t, AnniversaryTrigger) for t in scenario.triggers)


class _StaleBatch(Exception):
    """The fenced update touched fewer rows than claimed: roll the whole batch back."""
