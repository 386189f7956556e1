"""Retention: the purge removes old events and journal entries in batches, keeps recent ones,
events a running journey started from or the trigger pass has not read; a dry run changes
nothing; the worker schedules the job only when a retention is set."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select

from engine.audience.retention import purge
from engine.config import load_settings
from engine.errors import ConfigError
from engine.runtime.clock import VirtualClock
from engine.store import db
from engine.store.models import (
    AuditEntry,
    Contact,
    Enrollment,
    Event,
    EventInbox,
    JournalEntry,
    ScenarioRecord,
    ScenarioVersion,
)
from engine.worker.scheduler import Service

NOW = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=400)
RECENT = NOW - timedelta(days=10)


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    found = db.make_engine(engine_url)
    yield found
    found.dispose()


def seed(engine: Engine) -> dict[str, int]:
    """Old and recent events and journal entries; one old event started a running journey and
    another waits in the inbox."""
    with engine.begin() as conn:
        contact = conn.execute(
            insert(Contact).values(external_id="c1").returning(Contact.id)
        ).scalar_one()
        ids = conn.execute(
            insert(Event).returning(Event.id),
            [{"contact_id": contact, "name": f"e{i}", "occurred_at": OLD, "properties": {},
              "event_key": None} for i in range(7)]
            + [{"contact_id": contact, "name": "fresh", "occurred_at": RECENT, "properties": {},
                "event_key": None}],
        ).scalars().all()  # fmt: skip
        conn.execute(insert(ScenarioRecord).values(id="s", name="S", status="live"))
        version = conn.execute(
            insert(ScenarioVersion)
            .values(scenario_id="s", number=1, content_hash="h" * 64, bundle={})
            .returning(ScenarioVersion.id)
        ).scalar_one()
        conn.execute(
            insert(Enrollment).values(
                scenario_id="s", version_id=version, contact_id=contact, status="active",
                entry_key="a", trigger_event_id=ids[0], entered_at=OLD,
            )
        )  # fmt: skip
        conn.execute(
            insert(Enrollment).values(
                scenario_id="s", version_id=version, contact_id=contact, status="completed",
                entry_key="b", trigger_event_id=ids[2], entered_at=OLD,
            )
        )  # fmt: skip
        conn.execute(insert(EventInbox).values(event_id=ids[1]))
        conn.execute(
            insert(JournalEntry),
            [{"at": OLD, "kind": "step", "contact_id": contact, "data": None}] * 5
            + [{"at": RECENT, "kind": "step", "contact_id": contact, "data": None}],
        )
    return {"started": ids[0], "inbox": ids[1], "fresh": ids[-1]}


def _left(engine: Engine) -> tuple[set[int], int]:
    with engine.connect() as conn:
        events = set(conn.execute(select(Event.id)).scalars())
        journal = len(conn.execute(select(JournalEntry.id)).all())
    return events, journal


def test_purge_removes_old_rows_and_keeps_the_rest(engine: Engine) -> None:
    kept = seed(engine)
    report = purge(engine, NOW, 365, 30, actor="cron", batch=2)  # batches smaller than the rows
    assert (report.events, report.journal) == (5, 5)
    events, journal = _left(engine)
    assert events == {kept["started"], kept["inbox"], kept["fresh"]}
    assert journal == 1
    with engine.connect() as conn:
        entry = conn.execute(select(AuditEntry).where(AuditEntry.action == "purge")).one()
    assert entry.username == "cron"
    assert (entry.details["events"], entry.details["journal"]) == (5, 5)
    assert entry.details["events_before"] == (NOW - timedelta(days=365)).isoformat()


def test_dry_run_counts_and_changes_nothing(engine: Engine) -> None:
    seed(engine)
    before = _left(engine)
    report = purge(engine, NOW, 365, 30, dry_run=True)
    assert (report.events, report.journal, report.dry_run) == (5, 5, True)
    assert _left(engine) == before
    with engine.connect() as conn:
        assert conn.execute(select(AuditEntry)).all() == []


def test_zero_keeps_everything(engine: Engine) -> None:
    seed(engine)
    before = _left(engine)
    report = purge(engine, NOW, 0, 0)
    assert (report.events, report.journal) == (0, 0)
    assert _left(engine) == before


def test_the_worker_schedules_the_purge_only_with_a_retention(
    engine: Engine, engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(engine)
    for days, wanted in ((0, False), (30, True)):
        settings = load_settings(
            {}, database_url=engine_url, scenarios_dir=tmp_path, secret_key="s" * 32,
            retention_journal_days=days, retention_check_hours=6,
        )  # fmt: skip
        service = Service(engine, settings)
        monkeypatch.setattr(service.scheduler, "start", lambda: None)  # jobs added, none run
        service.start()
        job = service.scheduler.get_job("purge")
        assert (job is not None) == wanted
    assert job is not None and job.trigger.interval == timedelta(hours=6)
    service.worker.clock = VirtualClock(NOW)
    service.purge()  # the job itself, on the worker's clock
    assert _left(engine)[1] == 1


def test_settings_refuse_negative_retention() -> None:
    with pytest.raises(ConfigError, match="PARCOURS_RETENTION_EVENTS_DAYS"):
        load_settings({"PARCOURS_RETENTION_EVENTS_DAYS": "-1"})
    settings = load_settings({"PARCOURS_RETENTION_JOURNAL_DAYS": "30"})
    assert (settings.retention_events_days, settings.retention_journal_days) == (0, 30)
