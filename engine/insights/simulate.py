"""`parcours simulate`: the real worker on a virtual clock over a throw-away database.

Contacts and events come from files or are generated; the clock jumps from one interesting instant
to the next (an event, a due enrollment, a schedule firing), so months run in seconds.

Segment triggers are simulated through the real membership (engine.insights.segment_simulation).
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from engine.audience.ingest import (
    clean_contact,
    clean_event,
    record_events,
    record_imported_consents,
    upsert_contacts,
)
from engine.config import Settings, load_settings
from engine.insights.segment_simulation import apply_memberships, segment_entries
from engine.insights.trace import Trace
from engine.policy.loading import full_gate_factory
from engine.policy.model import Policy
from engine.runtime.clock import VirtualClock
from engine.spec.loader import load_bundle, scenario_bundle
from engine.spec.model import EventTrigger, Scenario
from engine.store.db import make_engine, upgrade
from engine.store.models import Enrollment, EventInbox, JournalEntry, Send
from engine.worker.runner import GateFactory, Worker
from engine.worker.triggers import next_fire_time, schedule_trigger
from engine.worker.versions import publish_bundle

FIRST_NAMES = (
    "Camille",
    "Léa",
    "Louis",
    "Hugo",
    "Chloé",
    "Jules",
    "Manon",
    "Lucas",
    "Inès",
    "Nathan",
)
NEGATIVE_RATE = {"unsubscribed": 0.02, "product_returned": 0.05, "spam_complaint": 0.005}
RESOLUTION = timedelta(minutes=1)  # the virtual clock never moves by less: events group by minute
ZONES = ("Europe/Paris",) * 7 + ("Europe/Brussels", "America/Montreal", "Indian/Reunion")


ROLLUP_SECONDS = 5.0  # real seconds between a simulation's KPI rollups


@dataclass
class SimulationReport:
    start: datetime
    end: datetime
    contacts: int
    scenarios: list[str]
    entries: dict[str, int] = field(default_factory=dict)
    refused: dict[str, dict[str, int]] = field(default_factory=dict)
    steps: dict[str, dict[str, int]] = field(default_factory=dict)
    sends: dict[str, dict[str, int]] = field(default_factory=dict)  # channel → day → count
    decisions: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    # scenario → "segment_entered:ID" / "segment_exited:ID" → entries by that trigger
    segment_entries: dict[str, dict[str, int]] = field(default_factory=dict)
    # per split step: arms, rates, intervals, uplift, decision (engine.insights.experiments)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    # scenario → KPIs; program → its simulated scenarios and their KPIs (engine.insights.kpis)
    kpis: dict[str, Any] = field(default_factory=dict)
    programs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "contacts": self.contacts,
            "scenarios": self.scenarios,
            "entries": self.entries,
            "refused_entries": self.refused,
            "steps": self.steps,
            "sends": self.sends,
            "decisions": self.decisions,
            "outcomes": self.outcomes,
            "converted": self.converted,
            "waiting": self.waiting,
            "segment_entries": self.segment_entries,
            "experiments": self.experiments,
            "kpis": self.kpis,
            "programs": self.programs,
        }

    def total_sends(self, channel: str | None = None) -> int:
        return sum(sum(days.values()) for ch, days in self.sends.items() if channel in (None, ch))


def generate_contacts(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """A plausible population: names, addresses, zones, birthdays, scores, some opted out."""
    rng = random.Random(seed)
    out = []
    for i in range(1, count + 1):
        first = rng.choice(FIRST_NAMES)
        birthday = date(1960, 1, 1) + timedelta(days=rng.randrange(0, 45 * 365))
        out.append(
            {
                "external_id": f"c{i:06d}",
                "first_name": first,
                "email": f"{first.lower().replace('é', 'e').replace('è', 'e')}.{i}@example.com",
                "phone": f"+336{rng.randrange(10_000_000, 99_999_999)}"
                if rng.random() < 0.8
                else "",
                "timezone": rng.choice(ZONES),
                "locale": "fr",
                "birthday": birthday.isoformat(),
                "country": rng.choice(("FR", "FR", "FR", "BE", "CA")),
                "score": rng.randrange(0, 60),
                "opted_out": "true" if rng.random() < 0.02 else "",
                # Consent as a real base has it: most opted in by email, fewer by SMS, some never
                # asked (unknown), a few opted out of promotions.
                "consent:email:*": "opted_in" if rng.random() < 0.85 else "",
                "consent:email:promotions": "opted_out" if rng.random() < 0.05 else "",
                "consent:sms:*": "opted_in" if rng.random() < 0.6 else "",
                # A few addresses that bounced hard before: on the suppression list.
                "suppressed": "email:hard_bounce" if rng.random() < 0.01 else "",
            }
        )
    return out


def file_contacts(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Contacts read from a file, each with an external id: a row naming its contact only by
    `identifier:<kind>` columns gets the one its anonymous contact will have, so that the events
    and memberships generated for it reach that contact."""
    from engine.audience.identity import anonymous_external_id
    from engine.audience.ingest import IDENTIFIER_COLUMN

    out = []
    for row in rows:
        given = {k: v for k, v in row.items() if v not in (None, "")}
        if not (given.get("external_id") or given.get("id")):
            found = [(k[len(IDENTIFIER_COLUMN) :], str(v).strip()) for k, v in given.items()
                     if isinstance(k, str) and k.startswith(IDENTIFIER_COLUMN)]  # fmt: skip
            if found:
                kind, value = found[0]
                value = value.lower() if kind == "email" else value
                row = {**row, "external_id": anonymous_external_id(kind, value)}
        out.append(dict(row))
    return out


def generate_events(
    scenarios: Sequence[Scenario],
    contacts: Sequence[Mapping[str, Any]],
    start: datetime,
    days: int,
    seed: int = 7,
) -> list[dict[str, Any]]:
    """Trigger events for event-driven scenarios, then some goal and awaited events after them."""
    rng = random.Random(seed)
    span = timedelta(days=max(days, 1)) / 2
    events: list[dict[str, Any]] = []
    for contact in contacts:
        cid = contact["external_id"]
        # Purchase history before the simulation, so recency conditions have something to read.
        for _ in range(rng.choice((0, 0, 1, 2, 3))):
            when = start - timedelta(days=rng.uniform(1, 200))
            events.append(
                {
                    "contact": cid,
                    "name": "order_placed",
                    "occurred_at": when,
                    "properties": {"total": round(rng.uniform(15, 250), 2)},
                }
            )
        for scenario in scenarios:
            for trig in scenario.triggers:
                if not isinstance(trig, EventTrigger) or rng.random() > 0.5:
                    continue
                when = start + span * rng.random()
                props = {
                    "total": round(rng.uniform(5, 300), 2),
                    "cart_url": "https://shop.example/cart",
                    "product": rng.choice(("shoes", "bag", "coat")),
                }
                events.append(
                    {"contact": cid, "name": trig.event, "occurred_at": when, "properties": props}
                )
                triggers = {t.event for t in scenario.triggers if isinstance(t, EventTrigger)}
                later = sorted(scenario.history_events() - triggers)
                for name in later:
                    if rng.random() < NEGATIVE_RATE.get(name, 0.3):
                        after = when + timedelta(hours=rng.uniform(0.5, 96))
                        events.append(
                            {
                                "contact": cid,
                                "name": name,
                                "occurred_at": after,
                                "properties": {"total": round(rng.uniform(15, 250), 2)},
                            }
                        )
    return events


def simulate(
    paths: Sequence[Path | Mapping[str, Any]],
    contacts: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    start: datetime,
    days: int,
    settings: Settings | None = None,
    database_url: str | None = None,
    gate_factory: GateFactory | None = None,
    inspect: Callable[[Engine], None] | None = None,
    resolution: timedelta = RESOLUTION,
    policy: Policy | None = None,
    memberships: Sequence[Mapping[str, Any]] = (),
    trace: TextIO | None = None,
) -> SimulationReport:
    """Run the scenarios in `paths` for the given contacts and events; return the report.

    `trace`: a text file that receives every entry, send, decision and exit as a JSON line
    while the simulation runs (engine.insights.trace).

    The worker keeps the segments of `settings.scenarios_dir`; `memberships` (see
    `generate_memberships`) are joins and leaves of manual segments applied at their instants.

    Each item of `paths` is a scenario file or a stored bundle (a published version, as
    `engine.worker.versions` keeps it), so a journey can run as it is live rather than as edited.

    `inspect`, when given, is called with the SQLAlchemy engine after the run and before the
    throw-away database is dropped, so tests can read the sends, journal and enrollments tables.
    `resolution` is the smallest step of the virtual clock: events and due times closer than
    that are handled in one pass (coarser is faster for large populations). With a `policy`
    (and no explicit `gate_factory`), every send goes through the full policy gate.
    """
    base = settings or load_settings(env={})
    with tempfile.TemporaryDirectory(prefix="parcours-sim-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'simulation.db'}"
        engine = make_engine(url)
        try:
            upgrade(engine)
            report = _run(
                engine, paths, contacts, events, start, days, base, gate_factory, resolution,
                policy, memberships, Trace(trace) if trace is not None else None,
            )  # fmt: skip
            if inspect is not None:
                inspect(engine)
            return report
        finally:
            engine.dispose()


def _run(
    engine: Any,
    paths: Sequence[Path | Mapping[str, Any]],
    contacts: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    start: datetime,
    days: int,
    base: Settings,
    gate_factory: GateFactory | None,
    resolution: timedelta,
    policy: Policy | None,
    memberships: Sequence[Mapping[str, Any]],
    trace: Trace | None = None,
) -> SimulationReport:
    from sqlalchemy.orm import Session

    end = start + timedelta(days=days)
    scenarios = []
    with Session(engine) as session, session.begin():
        for path in paths:
            bundle = scenario_bundle(path) if isinstance(path, Path) else dict(path)
            source = str(path) if isinstance(path, Path) else None
            publish_bundle(session, bundle, source, by="simulate", now=start)
            scenarios.append(load_bundle(bundle))
    with engine.begin() as conn:
        cleaned = [
            clean_contact({k: v for k, v in c.items() if k != "suppressed"}) for c in contacts
        ]
        upsert_contacts(conn, cleaned, start)
        record_imported_consents(conn, cleaned, start, policy)
        _suppress_listed(conn, contacts, start)
    pending = sorted((clean_event(e, start) for e in events), key=lambda e: e["occurred_at"])
    settings = base.evolve(anniversary_every_seconds=86_400, anniversary_lookahead_hours=48)
    clock = VirtualClock(start)
    if gate_factory is None and policy is not None:
        gate_factory = full_gate_factory(settings, policy)
    worker = Worker(engine, settings, clock, gate_factory=gate_factory, worker_id="simulation")
    worker.rollup_interval = ROLLUP_SECONDS  # the report finishes them (see _kpis)
    # only the segments the simulated journeys read are kept live (and those they compose)
    worker.segments.watcher.only = frozenset().union(*(sc.segments() for sc in scenarios))
    planned = sorted(memberships, key=lambda m: m["at"])
    now, cursor, joined = start, 0, 0
    while now <= end:
        due = []
        while joined < len(planned) and planned[joined]["at"] <= now:
            due.append(planned[joined])
            joined += 1
        if due:
            with engine.begin() as conn:
                apply_memberships(conn, due, now)
        arrived = []
        while cursor < len(pending) and pending[cursor]["occurred_at"] <= now:
            arrived.append(pending[cursor])
            cursor += 1
        if arrived:
            with engine.begin() as conn:
                record_events(conn, arrived, now)
        worker.run_once(now)
        if trace is not None:
            trace.flush(engine)
        nxt = [end + timedelta(seconds=1), now + timedelta(days=1)]
        if cursor < len(pending):
            nxt.append(pending[cursor]["occurred_at"])
        if joined < len(planned):
            nxt.append(planned[joined]["at"])
        with engine.connect() as conn:
            due = conn.execute(
                select(func.min(Enrollment.due_at)).where(Enrollment.status == "active")
            ).scalar()
            waiting_events = conn.execute(select(EventInbox.event_id).limit(1)).first()
        if due is not None:
            nxt.append(due)
        if waiting_events is not None:  # deferred to the next pass
            nxt.append(now + resolution)
        for scenario in scenarios:
            trig = schedule_trigger(scenario)
            fire = next_fire_time(trig, now) if trig else None
            if fire is not None:
                nxt.append(fire)
        following = min(t for t in nxt if t is not None)
        now = max(following, now + resolution)
        clock.set(now)
    return _report(engine, scenarios, len(contacts), start, end, base)


def _suppress_listed(conn: Any, contacts: Sequence[Mapping[str, Any]], now: datetime) -> None:
    """Contacts given with `suppressed: <channel>:<reason>` go on the suppression list."""
    from engine.policy.consent import suppress

    for c in contacts:
        marker = str(c.get("suppressed") or "")
        if not marker or c.get("email") is None:
            continue
        channel, _, reason = marker.partition(":")
        address = c["email"] if channel == "email" else c.get("phone")
        if address:
            suppress(conn, channel, str(address), reason or "operator", "import", now)


def _report(
    engine: Any,
    scenarios: list[Scenario],
    contacts: int,
    start: datetime,
    end: datetime,
    settings: Settings,
) -> SimulationReport:
    report = SimulationReport(start, end, contacts, [s.id for s in scenarios])
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                JournalEntry.scenario_id,
                JournalEntry.kind,
                JournalEntry.reason,
                JournalEntry.step_id,
                JournalEntry.enrollment_id,
            )
        ).all()
        reached: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        entries: Counter[str] = Counter()
        refused: dict[str, Counter[str]] = defaultdict(Counter)
        decisions: Counter[str] = Counter()
        for r in rows:
            if r.kind == "entered":
                entries[r.scenario_id] += 1
            elif r.kind == "skipped_entry":
                refused[r.scenario_id][r.reason] += 1
            if r.kind in ("step", "send", "decision") and r.step_id and r.enrollment_id:
                reached[r.scenario_id][r.step_id].add(r.enrollment_id)
            if r.kind in ("send", "decision"):
                decisions[r.reason or "allowed"] += 1
        report.entries = dict(entries)
        report.refused = {k: dict(v) for k, v in refused.items()}
        report.steps = {
            sc: {step: len(ids) for step, ids in by_step.items()} for sc, by_step in reached.items()
        }
        report.decisions = dict(decisions)
        sends: dict[str, Counter[str]] = defaultdict(Counter)
        for channel, created in conn.execute(select(Send.channel, Send.created_at)):
            sends[channel][created.astimezone(UTC).date().isoformat()] += 1
        report.sends = {ch: dict(sorted(days.items())) for ch, days in sends.items()}
        outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        for scenario_id, status, reason, n in conn.execute(
            select(
                Enrollment.scenario_id, Enrollment.status, Enrollment.end_reason, func.count()
            ).group_by(Enrollment.scenario_id, Enrollment.status, Enrollment.end_reason)
        ):
            outcomes[scenario_id][
                status if status in ("active", "converted", "completed") else f"{status}:{reason}"
            ] += n
        report.outcomes = {k: dict(v) for k, v in outcomes.items()}
        report.converted = {k: v.get("converted", 0) for k, v in outcomes.items()}
        report.waiting = {k: v.get("active", 0) for k, v in outcomes.items()}
        report.segment_entries = segment_entries(conn)
        report.experiments = _experiments(conn, scenarios)
    report.kpis, report.programs = _kpis(engine, scenarios, end, settings)
    return report


def _kpis(
    engine: Any, scenarios: list[Scenario], end: datetime, settings: Settings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The KPIs per scenario and per program of the workspace's programs that group simulated
    scenarios, from the rollups the worker kept during the run (finished here)."""
    from engine.insights.kpis import report as kpi_report
    from engine.insights.rollups import update_rollups
    from engine.spec.programs import workspace_programs

    while update_rollups(engine, settings.timezone, end, max_batches=1_000):
        pass
    ids = [s.id for s in scenarios]
    fixed = {s.id: s.fixed_cost for s in scenarios if s.fixed_cost}
    programs: dict[str, Any] = {}
    with engine.connect() as conn:
        rows = kpi_report(conn, scenarios=ids, by="scenario", fixed_costs=fixed).rows
        kpis = {row.pop("scenario"): row for row in rows}
        for program in workspace_programs(settings.scenarios_dir).programs.values():
            inside = [s for s in program.scenarios if s in ids]
            if inside:
                found = kpi_report(conn, scenarios=inside, by="scenario", fixed_costs=fixed)
                programs[program.id] = {"scenarios": inside, "kpis": found.totals}
    return kpis, programs


def _experiments(conn: Any, scenarios: list[Scenario]) -> list[dict[str, Any]]:
    """The split steps' results, as `parcours experiments --json` gives them."""
    from engine.insights.experiments import reports, split_steps

    return [r.to_dict() for sc in scenarios if split_steps(sc) for r in reports(conn, sc)]


def format_report(report: SimulationReport) -> str:
    """A plain-text report: one table per section."""
    lines = [
        f"Simulation {report.start:%Y-%m-%d %H:%M} → {report.end:%Y-%m-%d %H:%M} UTC, "
        f"{report.contacts} contacts, {len(report.scenarios)} scenario(s)",
        "",
    ]
    for sc in report.scenarios:
        lines.append(f"scenario {sc}")
        lines.append(f"  entries        {report.entries.get(sc, 0):>8}")
        for trigger, n in report.segment_entries.get(sc, {}).items():
            lines.append(f"    on {trigger:<27}{n:>8}")
        for reason, n in sorted(report.refused.get(sc, {}).items()):
            lines.append(f"  not entered: {reason:<18}{n:>8}")
        for step, n in report.steps.get(sc, {}).items():
            lines.append(f"  step {step:<26}{n:>8}")
        for outcome, n in sorted(report.outcomes.get(sc, {}).items()):
            lines.append(f"  outcome {outcome:<23}{n:>8}")
        lines.append("")
    lines.append("sends per channel per day")
    for channel, days in sorted(report.sends.items()):
        for day, n in days.items():
            lines.append(f"  {channel:<10}{day}  {n:>8}")
    if not report.sends:
        lines.append("  (none)")
    lines.append("")
    lines.append("decisions by reason")
    for reason, n in sorted(report.decisions.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {reason:<32}{n:>8}")
    return "\n".join(lines)
