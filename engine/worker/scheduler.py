"""APScheduler 3 drives the worker: a tick, a cron job per scheduled scenario, and maintenance.

Waiting contacts are rows in our table, not APScheduler jobs. The tick runs a worker pass; a cron
job only wakes the tick at the scenario's fire time (the firing itself is recorded idempotently by
the pass, so a restart or a second worker never fires twice). An arriving event wakes the tick too.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.engine import Engine

from engine import metrics
from engine.config import Settings
from engine.delivery.loop import Dispatcher
from engine.spec.cron import cron_for
from engine.store.db import utcnow
from engine.worker.heartbeats import forget_worker, record_beat, this_worker
from engine.worker.runner import GateFactory, PassReport, Worker
from engine.worker.triggers import schedule_trigger

logger = logging.getLogger(__name__)


class Service:
    """The worker process: owns one Worker and one APScheduler scheduler."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        blocking: bool = False,
        gate_factory: GateFactory | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        # With real channels, the worker queues their sends and the dispatcher delivers them.
        self.dispatcher = dispatcher
        delivering = tuple(dispatcher.channels) if dispatcher else ()
        self.worker = Worker(engine, settings, gate_factory=gate_factory, delivering=delivering)
        self.settings = settings
        self.scheduler: BaseScheduler = (BlockingScheduler if blocking else BackgroundScheduler)(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        )
        self._lock = threading.Lock()
        self._idle = threading.Condition()  # notified when a job ends
        self._running = 0  # jobs running now
        self._woken = threading.Event()  # set by wake(), cleared when a pass starts
        self.last_report: PassReport | None = None
        self.totals: dict[str, int] = {"steps": 0, "sends": 0, "passes": 0}
        self.worker_id = this_worker()  # in the heartbeats
        self.started_at = utcnow()

    def _every(
        self, job: Callable[[], object], job_id: str, instances: int = 1, **interval: float
    ) -> None:
        """Run `job` now, then at every interval (`instances`: how many may run at once)."""
        self.scheduler.add_job(
            self._tracked(job), "interval", id=job_id, next_run_time=datetime.now(UTC),
            max_instances=instances, **interval,
        )  # fmt: skip

    def _tracked(self, job: Callable[[], object]) -> Callable[[], None]:
        """The job, counted while it runs (shutdown waits for the count to reach 0), and
        skipped once a stop was asked."""

        @functools.wraps(job)
        def run() -> None:
            with self._idle:
                self._running += 1
            try:
                if not self.worker.stopping.is_set():
                    job()
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()

        return run

    def start(self) -> None:
        # A second instance may start while a pass runs, so that a wake is never skipped.
        self._every(self.tick, "tick", instances=2, seconds=self.settings.tick_seconds)
        # Its own job, so that a long pass does not make the worker look dead.
        self._every(self.heartbeat, "heartbeat", seconds=self.settings.heartbeat_seconds)
        if self.dispatcher is not None:
            self._every(self.deliver, "deliver", seconds=self.settings.tick_seconds)
        self._every(self.sync_schedules, "sync-schedules", seconds=60)
        # Hourly, so a restart neither skips nor repeats the recompute: it runs when due.
        self._every(self.recompute_attributes, "attributes", hours=1)
        if self.settings.retention_events_days or self.settings.retention_journal_days:
            self._every(self.purge, "purge", hours=self.settings.retention_check_hours)
        self.scheduler.start()

    def purge(self) -> None:
        """The retention purge of old events and journal entries (PARCOURS_RETENTION_*)."""
        from engine.audience.retention import purge

        try:
            s = self.settings
            report = purge(self.worker.engine, self.worker.clock.now(), s.retention_events_days,
                           s.retention_journal_days)  # fmt: skip
            logger.info("retention: %d events, %d journal entries purged", report.events,
                        report.journal, extra={"action": "purge"})  # fmt: skip
        except Exception:
            logger.exception("retention purge failed; retrying at the next check",
                             extra={"action": "purge"})  # fmt: skip

    def recompute_attributes(self) -> None:
        """The full recompute of the computed attributes, once ATTRIBUTES_EVERY_HOURS passed."""
        from engine.audience.attributes import recompute_when_due

        try:
            every = timedelta(hours=self.settings.attributes_every_hours)
            now = self.worker.clock.now()
            customers = recompute_when_due(self.worker.engine, self.settings.scenarios_dir, now,
                                           every)  # fmt: skip
            if customers is not None:
                logger.info("computed attributes: %d customers scored", customers,
                            extra={"action": "attributes"})  # fmt: skip
                # the segments reading them are rebuilt at the next pass
                self.worker.segments.rebuild_metric_readers()
        except Exception:
            logger.exception("computed attributes failed; retrying in an hour",
                             extra={"action": "attributes"})  # fmt: skip

    def heartbeat(self) -> None:
        """Record that this worker is alive (engine.worker.heartbeats)."""
        try:
            record_beat(self.worker.engine, self.worker_id, self.started_at, utcnow(),
                        self.worker.batches, metrics.provider_states())  # fmt: skip
        except Exception:
            logger.exception("heartbeat failed; retrying", extra={"action": "heartbeat"})

    def stop_soon(self) -> None:
        """Ask the running jobs to stop at their next safe point: the worker pass after the
        batch in progress, the delivery pass after the message being delivered."""
        self.worker.stopping.set()
        if self.dispatcher is not None:
            self.dispatcher.stopping.set()

    def shutdown(self) -> None:
        """Stop gracefully: ask the jobs to stop, wait until none runs, close the channels.

        (APScheduler's own `shutdown(wait=True)` holds its job store lock while it waits, so a
        running job that reads or moves a job, as `sync_schedules` and `wake` do, would never
        end: the jobs are waited for here, the scheduler paused, not holding that lock.)"""
        self.stop_soon()
        running = self.scheduler.running
        if running:
            self.scheduler.pause()
            with self._idle:
                self._idle.wait_for(lambda: self._running == 0)
            self.scheduler.shutdown(wait=False)
        if self.dispatcher is not None:
            self.dispatcher.close()
        if running:
            try:
                forget_worker(self.worker.engine, self.worker_id)
            except Exception:
                logger.exception("could not remove the heartbeat", extra={"action": "heartbeat"})

    def deliver(self) -> None:
        """One delivery pass (its own job: a slow provider never holds the journeys back)."""
        if self.dispatcher is None:
            return
        try:
            report = self.dispatcher.run_once()
            if report:
                logger.info(
                    "delivery: %d sent, %d retried, %d failed, %d bounced, %d ambiguous",
                    report.sent, report.retried, report.failed, report.bounced, report.ambiguous,
                    extra={"action": "deliver"},
                )  # fmt: skip
        except Exception:
            logger.exception("delivery pass failed; retrying", extra={"action": "deliver"})

    def wake(self) -> None:
        """Run the tick now (an event arrived, or a cron fire time came)."""
        self._woken.set()  # before the job moves: a pass running now sees it when it ends
        job = self.scheduler.get_job("tick")
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    def tick(self) -> None:
        """Worker passes until no wake came during the last one; errors are logged, never kill
        the scheduler. A wake while a pass runs is not lost: that pass is followed by another."""
        while True:
            if not self._lock.acquire(blocking=False):
                return  # the pass running now looks at the wake when it ends
            try:
                self._woken.clear()
                self._pass()
            finally:
                self._lock.release()
            if not self._woken.is_set() or self.worker.stopping.is_set():
                return

    def _pass(self) -> None:
        try:
            report = self.worker.run_once()
            self.last_report = report
            self.totals["passes"] += 1
            self.totals["steps"] += report.steps
            self.totals["sends"] += report.sends
            done = {name: n for name, n in report.triggers.items() if n}
            if report.claimed or done:  # an idle pass says nothing
                logger.info(
                    "pass: %d batches, %d enrollments, %d steps, %d sends, triggers %s",
                    report.batches, report.claimed, report.steps, report.sends, done,
                    extra={"action": "tick", "batches": report.batches,
                           "enrollments": report.claimed, "steps": report.steps,
                           "sends": report.sends},
                )  # fmt: skip
        except Exception:
            logger.exception(
                "worker pass failed; retrying at the next tick", extra={"action": "tick"}
            )

    def sync_schedules(self) -> None:
        """Keep one cron job per live scheduled scenario, each waking the tick at its fire times."""
        try:
            with self.worker.engine.connect() as conn:
                live = self.worker.cache.live(conn)
        except Exception:
            logger.exception("could not read live scenarios", extra={"action": "sync_schedules"})
            return
        wanted: dict[str, Any] = {}
        for _, scenario in live:
            trig = schedule_trigger(scenario)
            if trig is not None:
                wanted[f"cron:{scenario.id}:{trig.cron}:{trig.timezone}"] = cron_for(trig)
        for job in self.scheduler.get_jobs():
            if job.id.startswith("cron:") and job.id not in wanted:
                job.remove()
        for job_id, trigger in wanted.items():
            if self.scheduler.get_job(job_id) is None:
                self.scheduler.add_job(self.wake, trigger, id=job_id)
