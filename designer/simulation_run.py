"""A simulation run: real contacts sampled from the database, and the child process that runs
the worker on them (or on generated ones) over a throw-away database, the open journey with the
other journeys of the workspace (`designer.simulation_journeys`), then alone to compare.

The real database is only read; the child receives a picklable `Job` and answers counts only.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from designer import ApiError
from designer.i18n import gettext as _
from designer.simulation_competition import rival_figures, verb
from designer.simulation_journeys import Rival
from engine.config import Settings
from engine.errors import ParcoursError
from engine.policy.model import Policy
from engine.store.db import SQLITE_BEGIN
from engine.store.models import (
    ConsentState,
    Contact,
    Enrollment,
    Event,
    JournalEntry,
    Send,
    Suppression,
)

logger = logging.getLogger(__name__)

HISTORY = timedelta(days=400)  # real events copied with a sample, for recency conditions
MAX_HISTORY_EVENTS = 100_000
CHUNK = 500  # ids per IN (...) query


@dataclass(frozen=True)
class Options:
    """The choices of one run, checked (`designer.simulation.parse_options`)."""

    population: str  # generated | sample
    contacts: int
    sample: str  # random | recent (sample only)
    days: int
    policy: bool
    seed: int
    start: datetime
    alone: bool  # without the other journeys

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "start": self.start.isoformat()}


@dataclass(frozen=True)
class Job:
    """What the child process needs: everything picklable, nothing tied to the request."""

    path: Path
    rivals: list[Rival]  # the other journeys; with `options.alone` they only shape the events
    order: list[str]  # every journey id, the order the events are generated in
    settings: Settings
    policy: Policy | None
    options: Options
    contacts: list[dict[str, Any]] | None  # None: generate `options.contacts`
    history: list[dict[str, Any]]

    @property
    def resolution(self) -> timedelta:
        # Coarser steps for large populations: same decisions, a few minutes of timing lost.
        size = self.options.contacts
        return timedelta(minutes=1 if size <= 2_000 else 10 if size <= 10_000 else 30)


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


def sample_contacts(
    engine: Engine, options: Options
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Contacts of the real database (with their consents, suppressions and recent events) as
    import rows for the throw-away one. Only reads."""
    with engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        if options.sample == "recent":
            query = select(Contact.id).order_by(Contact.created_at.desc(), Contact.id.desc())
            ids = list(conn.execute(query.limit(options.contacts)).scalars())
        else:
            every = list(conn.execute(select(Contact.id).order_by(Contact.id)).scalars())
            ids = random.Random(options.seed).sample(every, min(options.contacts, len(every)))
        ids.sort()
        rows: dict[int, dict[str, Any]] = {}
        for part in _chunks(ids):
            rows.update(_contact_rows(conn, part, options.start))
        history = _history(conn, rows, options.start)
    return list(rows.values()), history


def _contact_rows(conn: Connection, ids: list[int], start: datetime) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for c in conn.execute(select(Contact).where(Contact.id.in_(ids))):
        rows[c.id] = {
            "external_id": c.external_id,
            "email": c.email,
            "phone": c.phone,
            "timezone": c.timezone,
            "locale": c.locale,
            "score": c.score,
            "tags": list(c.tags or []),
            "opted_out": bool(c.opted_out),
            "attributes": dict(c.attributes or {}),
        }
    consents = select(ConsentState).where(ConsentState.contact_id.in_(ids))
    for s in conn.execute(consents):
        live = s.expires_at is None or s.expires_at > start
        if s.contact_id in rows and live and s.state in ("opted_in", "opted_out"):
            rows[s.contact_id][f"consent:{s.channel}:{s.topic}"] = s.state
    suppressed = select(Suppression).where(Suppression.contact_id.in_(ids)).order_by(Suppression.id)
    for channel, reason, owner in conn.execute(
        suppressed.with_only_columns(
            Suppression.channel, Suppression.reason, Suppression.contact_id
        )
    ):
        row = rows.get(owner or 0)
        if row is not None and channel in ("email", "sms", "call") and "suppressed" not in row:
            row["suppressed"] = f"{'email' if channel == 'email' else 'sms'}:{reason}"
    return rows


def _history(
    conn: Connection, rows: dict[int, dict[str, Any]], start: datetime
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for part in _chunks(sorted(rows)):
        query = (
            select(Event.contact_id, Event.name, Event.properties, Event.occurred_at)
            .where(Event.contact_id.in_(part))
            .where(Event.occurred_at >= start - HISTORY, Event.occurred_at < start)
            .order_by(Event.occurred_at.desc())
            .limit(MAX_HISTORY_EVENTS - len(events))
        )
        for e in conn.execute(query):
            contact = rows[e.contact_id]["external_id"]
            properties = dict(e.properties or {})
            events.append(
                {"contact": contact, "name": e.name, "properties": properties,
                 "occurred_at": e.occurred_at}
            )  # fmt: skip
        if len(events) >= MAX_HISTORY_EVENTS:
            break
    return events


def run_job(job: Job) -> dict[str, Any]:
    """Run one simulation (in the child process): the report and the open journey's details
    with the other journeys, then on the same contacts and events alone. Alone (asked, or with
    no other journey) it runs once; the events are those of every journey either way, so the
    alone figures are the same whether asked for or compared with."""
    from engine.insights.simulate import generate_contacts, generate_events, simulate
    from engine.policy.gate import lookback
    from engine.spec.loader import load_bundle, load_scenario_file

    options = job.options
    scenario = load_scenario_file(job.path)
    journeys = {r.id: r.bundle for r in job.rivals}
    loaded = {r: load_bundle(b) for r, b in journeys.items()} | {scenario.id: scenario}
    lineup = [loaded[i] for i in job.order if i in loaded]
    contacts = job.contacts
    if contacts is None:
        contacts = generate_contacts(options.contacts, options.seed)
    events = generate_events(lineup, contacts, options.start, options.days, options.seed)
    if job.contacts is not None:  # real contacts keep their own past, not a generated one
        events = [e for e in events if e["occurred_at"] >= options.start] + job.history
    window = lookback(job.policy) if job.policy is not None else None

    def run(paths: list[Path | dict[str, Any]], rivals: list[str]) -> dict[str, Any]:
        details: dict[str, Any] = {}

        def inspect(engine: Engine) -> None:
            details.update(_details(engine, scenario.id))
            details["rivals"] = rival_figures(engine, scenario.id, rivals, window)

        report = simulate(
            paths,
            contacts,
            events,
            options.start,
            options.days,
            settings=job.settings,
            resolution=job.resolution,
            policy=job.policy,
            inspect=inspect,
        )
        return {"report": report.to_dict(), **details}

    own: list[Path | dict[str, Any]] = [job.path]
    if options.alone or not job.rivals:
        return {**run(own, []), "alone": None}
    together = run([journeys.get(i, job.path) for i in job.order if i in loaded], list(journeys))
    return {**together, "alone": run(own, [])}


def _details(engine: Engine, scenario_id: str) -> dict[str, Any]:
    """What the report does not split by journey: where the open journey's enrollments stand,
    what each policy rule did to its messages, its sends per channel per day, its decisions."""
    at: dict[str, Counter[str]] = defaultdict(Counter)
    policy: dict[str, Counter[str]] = defaultdict(Counter)
    sends: dict[str, Counter[str]] = defaultdict(Counter)
    decisions: Counter[str] = Counter()
    with engine.connect() as conn:
        enrollments = select(Enrollment.step_id, Enrollment.status)
        for step, status in conn.execute(enrollments.where(Enrollment.scenario_id == scenario_id)):
            at[step or ""]["waiting" if status == "active" else "ended"] += 1
        journal = select(JournalEntry.kind, JournalEntry.reason, JournalEntry.data).where(
            JournalEntry.scenario_id == scenario_id, JournalEntry.kind.in_(("send", "decision"))
        )
        for kind, reason, data in conn.execute(journal):
            decisions[reason or "allowed"] += 1
            if kind == "decision":
                policy[reason or "unknown"][verb(data)] += 1
        own = select(Send.channel, Send.created_at).where(Send.scenario_id == scenario_id)
        for channel, created in conn.execute(own):
            sends[channel][created.astimezone(UTC).date().isoformat()] += 1
    return {
        "at_step": {step: dict(n) for step, n in at.items()},
        "policy": {reason: dict(n) for reason, n in policy.items()},
        "sends": {ch: dict(sorted(days.items())) for ch, days in sends.items()},
        "decisions": dict(decisions),
    }


def _child(job: Job, pipe: Any) -> None:
    try:
        pipe.send(("ok", run_job(job)))
    except ParcoursError as exc:
        pipe.send(("error", str(exc)))
    except Exception as exc:  # the parent answers JSON; the trace stays in this process's log
        logger.exception("simulation failed")
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()


def run_with_limit(job: Job, limit: float) -> dict[str, Any]:
    """Run `job` in a child process; stop it at `limit` seconds."""
    context = multiprocessing.get_context("spawn")  # no inherited threads, locks or connections
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(job, send), name="parcours-simulation")
    child.start()
    send.close()  # the child holds the only writer: its exit wakes the poll below
    try:
        if not receive.poll(limit):
            message = _(
                "Stopped after %(s)d seconds: simulate fewer contacts or days.", s=int(limit)
            )
            raise ApiError(504, "timeout", message)
        try:
            status, value = receive.recv()
        except EOFError:
            status, value = "error", f"the simulation stopped (exit code {child.exitcode})"
        if status != "ok":
            raise ApiError(500, "failed", _("The simulation failed: %(e)s", e=value))
        result: dict[str, Any] = value
        return result
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join(5)
