"""Prometheus metrics: counters kept by the process that does the work, and gauges read from
the database when Prometheus scrapes.

Counters (batches, steps, gate decisions, sends, delivery latency and retries, events) are
counted where the work happens. In one process (`parcours up`) the default registry holds them.
With several processes (web server workers, separate `parcours worker` processes), start each
with PROMETHEUS_MULTIPROC_DIR set to one empty folder they share: prometheus_client then keeps
every process's values in files there, and /metrics adds them up (`exposition`). The variable
is the library's and is read when it is first imported, so it is set before the process starts.

The state shared by every process (enrollments due and their lag, queue depths, worker
heartbeats) is counted by `DatabaseCollector` in SQL at scrape time, with bounded queries on
existing indexes, so any web process answers the same figures whichever worker did the work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import Select, func, literal_column, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from engine.store.db import SQLITE_BEGIN, utcnow
from engine.store.models import (
    ContactChange,
    Enrollment,
    EventInbox,
    SegmentDue,
    Send,
)
from engine.worker.heartbeats import read_beats

if TYPE_CHECKING:
    from engine.runtime.interpreter import Transition

logger = logging.getLogger(__name__)

COUNT_CAP = 100_000  # a backlog gauge counts up to this many rows, then says "at least"
PENDING_SEND_STATUSES = ("queued", "sending", "ambiguous")
# A provider's state from its last delivery: it answered (ok), it failed to (failing), or its
# settings are wrong (misconfigured, the channel is paused).
PROVIDER_OK, PROVIDER_FAILING, PROVIDER_MISCONFIGURED = "ok", "failing", "misconfigured"

BATCHES = Counter("parcours_batches", "Batches of due enrollments advanced and committed.")
ENROLLMENTS = Counter("parcours_enrollments_advanced", "Enrollments advanced in committed batches.")
STEPS = Counter("parcours_steps", "Steps the interpreter ran in committed batches.")
STALE = Counter(
    "parcours_stale_batches",
    "Batches dropped unwritten because their lease ran out and another worker took them.",
)
BATCH_SECONDS = Histogram(
    "parcours_batch_seconds",
    "Time to claim, advance and commit one batch.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DECISIONS = Counter(
    "parcours_gate_decisions",
    "Policy gate decisions on sends: action (allow, defer, skip, fallback, exit) and the "
    "deciding rule.",
    ["action", "reason"],
)
SENDS = Counter(
    "parcours_sends",
    "Sends entering a ledger status: queued (for a provider) or sent (outbox) when reserved; "
    "sent, failed, bounced, ambiguous or cancelled by the delivery loop.",
    ["channel", "status"],
)
RETRIES = Counter(
    "parcours_delivery_retries",
    "Transient provider errors after which the send is queued again.",
    ["channel"],
)
DELIVERY_SECONDS = Histogram(
    "parcours_delivery_seconds",
    "Duration of one provider call.",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
EVENTS = Counter("parcours_events", "Events read by the trigger pass (each recorded event once).")

# The last delivery outcome of each channel in this process, for the worker's heartbeat.
_providers: dict[str, dict[str, str]] = {}
_providers_lock = threading.Lock()


# --- instrumentation: called by the worker and the delivery loop -------------------------------


def batch_committed(
    transitions: Iterable[Transition], delivering: Collection[str], seconds: float
) -> None:
    """Count one committed batch: its enrollments, steps, the gate's decisions and the sends
    it reserved (queued for a provider in `delivering`, else sent through the outbox)."""
    enrollments = steps = 0
    decisions: Tally[tuple[str, str]] = Tally()
    sends: Tally[tuple[str, str]] = Tally()
    for tr in transitions:
        enrollments += 1
        steps += tr.steps_run
        for eff in tr.sends:
            channel = eff.request.channel
            sends[channel, "queued" if channel in delivering else "sent"] += 1
        for rec in tr.journal:
            data = rec.data or {}
            if rec.kind == "decision":
                decisions[str(data.get("action", "")), rec.reason or ""] += 1
            elif rec.kind == "send" and "channel" in data:  # allowed by the gate
                decisions["allow", rec.reason or "allowed"] += 1
    BATCHES.inc()
    ENROLLMENTS.inc(enrollments)
    STEPS.inc(steps)
    BATCH_SECONDS.observe(seconds)
    for (action, reason), n in decisions.items():
        DECISIONS.labels(action, reason).inc(n)
    for (channel, status), n in sends.items():
        SENDS.labels(channel, status).inc(n)


def batch_stale() -> None:
    STALE.inc()


def events_read(count: int) -> None:
    if count:
        EVENTS.inc(count)


def delivery_done(
    channel: str, status: str, seconds: float, error: str | None = None, paused: bool = False
) -> None:
    """Count one provider call and its outcome: `status` is the ledger status the send goes
    to (`queued` again after a transient error, or a paused channel when `paused`)."""
    DELIVERY_SECONDS.labels(channel).observe(seconds)
    if paused:
        state = PROVIDER_MISCONFIGURED
    elif status == "queued":
        RETRIES.labels(channel).inc()
        state = PROVIDER_FAILING
    else:
        SENDS.labels(channel, status).inc()
        # A bounce or a refusal is an answer; giving up after retries or a crash is not.
        gave_up = status == "failed" and (error or "").startswith(("gave up", "internal error"))
        state = PROVIDER_FAILING if status == "ambiguous" or gave_up else PROVIDER_OK
    with _providers_lock:
        _providers[channel] = {"state": state, "at": utcnow().isoformat()}


def sends_cancelled(channels: Iterable[str]) -> None:
    for channel, n in Tally(channels).items():
        SENDS.labels(channel, "cancelled").inc(n)


def provider_states() -> dict[str, dict[str, str]]:
    """The last outcome of each channel this process delivered: {channel: {state, at}}."""
    with _providers_lock:
        return {name: dict(state) for name, state in _providers.items()}


# --- gauges from the database ------------------------------------------------------------------


def _literal(value: str) -> Any:
    # Written into the statement, not bound: the planners match a partial index's predicate
    # (`status = 'active'`) only against a constant.
    return literal_column(f"'{value}'")


def _capped_count(query: Select[Any], cap: int) -> Select[Any]:
    """COUNT over at most `cap` rows of `query`: a backlog of millions is never walked."""
    return select(func.count()).select_from(query.limit(cap).subquery())


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class DatabaseCollector(Collector):
    """Gauges counted in SQL at each scrape, from every process's shared tables."""

    def __init__(
        self, engine: Engine, now: Callable[[], datetime] = utcnow, cap: int = COUNT_CAP
    ) -> None:
        self.engine = engine
        self.now = now
        self.cap = cap

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
                families = list(self._families(conn, self.now()))
        except SQLAlchemyError as exc:
            logger.warning("metrics: the database did not answer (%s)", type(exc).__name__)
            families = []
        up = 1.0 if families else 0.0
        yield _gauge("parcours_database_up", "1 when the scrape could read the database.", up)
        yield _gauge(
            "parcours_database_scrape_seconds",
            "Time the scrape spent counting in the database.",
            time.monotonic() - started,
        )
        yield from families

    def _families(self, conn: Connection, now: datetime) -> Iterator[Metric]:
        cap = self.cap
        q = gauge_queries(now, cap)

        def scalar(name: str) -> Any:
            return conn.execute(q[name]).scalar()

        yield _gauge(
            "parcours_enrollments_due",
            f"Active enrollments whose due time has come (counted up to {cap}).",
            scalar("enrollments_due"),
        )
        oldest = scalar("oldest_due")
        yield _gauge(
            "parcours_enrollments_due_lag_seconds",
            "How late the oldest due enrollment is; 0 when none is due.",
            max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        )
        pending = GaugeMetricFamily(
            "parcours_sends_pending",
            f"Sends waiting in the ledger by channel and status: queued (for a provider), "
            f"sending (handed over), ambiguous (for an operator); up to {cap} per status.",
            labels=["channel", "status"],
        )
        for status in PENDING_SEND_STATUSES:
            for channel, count in conn.execute(q[f"sends_{status}"]):
                pending.add_metric([channel, status], count)
        yield pending
        yield _gauge(
            "parcours_events_pending",
            f"Events recorded but not yet read by the trigger pass (up to {cap}).",
            scalar("events_pending"),
        )
        yield _gauge(
            "parcours_segment_due",
            f"Segment memberships due to be computed again (up to {cap}).",
            scalar("segment_due"),
        )
        yield _gauge(
            "parcours_contact_changes_pending",
            f"Contact changes the segment upkeep has not read yet (up to {cap}).",
            scalar("contact_changes_pending"),
        )
        yield from _heartbeats(conn, now)


def gauge_queries(now: datetime, cap: int = COUNT_CAP) -> dict[str, Select[Any]]:
    """The statements behind the database gauges, each answered from an index and bounded
    by `cap` rows (tests/test_metrics.py checks their plans on PostgreSQL)."""
    due = (Enrollment.status == _literal("active"), Enrollment.due_at <= now)
    queries: dict[str, Select[Any]] = {
        "enrollments_due": _capped_count(select(Enrollment.id).where(*due), cap),
        "oldest_due": select(func.min(Enrollment.due_at)).where(*due),
        "events_pending": _capped_count(select(EventInbox.event_id), cap),
        "segment_due": _capped_count(
            select(SegmentDue.contact_id).where(SegmentDue.due_at <= now), cap
        ),
        "contact_changes_pending": _capped_count(select(ContactChange.contact_id), cap),
    }
    for status in PENDING_SEND_STATUSES:
        rows = select(Send.channel).where(Send.status == _literal(status)).limit(cap).subquery()
        queries[f"sends_{status}"] = select(rows.c.channel, func.count()).group_by(rows.c.channel)
    return queries


def _heartbeats(conn: Connection, now: datetime) -> Iterator[Metric]:
    age = GaugeMetricFamily(
        "parcours_worker_heartbeat_age_seconds",
        "Seconds since each worker process last recorded its heartbeat.",
        labels=["worker"],
    )
    batches = GaugeMetricFamily(
        "parcours_worker_batches",
        "Batches each worker process committed since it started.",
        labels=["worker"],
    )
    for beat in read_beats(conn):
        age.add_metric([beat.worker_id], max((now - beat.last_beat).total_seconds(), 0.0))
        batches.add_metric([beat.worker_id], beat.batches)
    yield age
    yield batches


# --- exposition ----------------------------------------------------------------------------------


class _ThisProcess(Collector):
    """The default registry's metrics (this process's counters, process and GC figures)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()

    def describe(self) -> list[Metric]:
        return []


def multiprocess_dir() -> str | None:
    """prometheus_client's folder of per-process files (its own variable), if set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(
    engine: Engine, now: Callable[[], datetime] = utcnow, extra: Sequence[Collector] = ()
) -> tuple[bytes, str]:
    """The Prometheus text of every metric, and its content type: the counters of this
    process, or of every process sharing PROMETHEUS_MULTIPROC_DIR, and the database gauges."""
    registry = CollectorRegistry(auto_describe=False)
    folder = multiprocess_dir()
    if folder:
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseCollector(engine, now))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
