"""Retention: events and journal entries older than the configured number of days are deleted.

The purge job runs in batches (`BATCH` ids per statement, one transaction per batch, so it never
holds the write lock long) from `parcours purge` and, when a retention is set, from the worker
every `PARCOURS_RETENTION_CHECK_HOURS`. An event stays while a running journey started from it
(`enrollments.trigger_event_id`) or while the trigger pass has not read it (`event_inbox`).
Each real run appends a ``purge`` entry with its counts to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Engine

from engine.store.db import id_in
from engine.store.models import AuditEntry, Enrollment, Event, EventInbox, JournalEntry

BATCH = 5_000


@dataclass
class PurgeReport:
    """How many rows a purge removed (or, dry run, would remove), and the cut-off instants."""

    events: int = 0
    journal: int = 0
    events_before: datetime | None = None
    journal_before: datetime | None = None
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values (instants in ISO 8601)."""
        return {
            "events": self.events,
            "journal": self.journal,
            "events_before": _iso(self.events_before),
            "journal_before": _iso(self.journal_before),
            "dry_run": self.dry_run,
        }


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant is not None else None


def _unneeded_events() -> Any:
    """Events that may go: no running journey started from them, and read by the trigger pass.

    Correlated on the event's contact, so each event looks up its own contact's active
    enrollments (``ix_enrollments_contact_id_status``) instead of every active enrollment of the
    base being read for every batch.
    """
    started = (
        select(Enrollment.id)
        .where(
            Enrollment.contact_id == Event.contact_id,
            Enrollment.status == "active",
            Enrollment.trigger_event_id == Event.id,
        )
        .exists()
    )
    unread = select(EventInbox.event_id).where(EventInbox.event_id == Event.id).exists()
    return ~started & ~unread  # two anti-joins (an OR of the two would read each one whole)


def _purge_events(engine: Engine, before: datetime, dry_run: bool, batch: int) -> int:
    old = Event.occurred_at < before
    if dry_run:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(Event).where(old, _unneeded_events())
                ).scalar_one()
            )
    done, last = 0, 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(Event.id).where(old, Event.id > last).order_by(Event.id).limit(batch)
                ).scalars()
            )
            if not ids:
                return done
            last = ids[-1]
            gone = conn.execute(
                delete(Event).where(id_in(Event.id, ids, conn.dialect.name), _unneeded_events())
            )
            done += int(gone.rowcount or 0)


def _purge_journal(engine: Engine, before: datetime, dry_run: bool, batch: int) -> int:
    old = JournalEntry.at < before
    if dry_run:
        with engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(JournalEntry).where(old)).scalar_one()
            )
    done = 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    # Oldest first through ix_journal_at: the last, empty batch reads
                    # nothing instead of the whole journal in id order.
                    select(JournalEntry.id).where(old).order_by(JournalEntry.at).limit(batch)
                ).scalars()
            )
            if not ids:
                return done
            gone = conn.execute(
                delete(JournalEntry).where(id_in(JournalEntry.id, ids, conn.dialect.name))
            )
            done += int(gone.rowcount or 0)


def purge(
    engine: Engine,
    now: datetime,
    events_days: int,
    journal_days: int,
    *,
    dry_run: bool = False,
    actor: str = "system",
    batch: int = BATCH,
) -> PurgeReport:
    """Delete the events older than `events_days` and the journal entries older than
    `journal_days` (0: keep that kind); with `dry_run`, only count them."""
    report = PurgeReport(dry_run=dry_run)
    if events_days > 0:
        report.events_before = now - timedelta(days=events_days)
        report.events = _purge_events(engine, report.events_before, dry_run, batch)
    if journal_days > 0:
        report.journal_before = now - timedelta(days=journal_days)
        report.journal = _purge_journal(engine, report.journal_before, dry_run, batch)
    if not dry_run and (events_days > 0 or journal_days > 0):
        with engine.begin() as conn:
            conn.execute(
                insert(AuditEntry).values(
                    username=actor[:64], action="purge", target_kind="retention",
                    target_id=None, details=report.to_dict(),
                )
            )  # fmt: skip
    return report
