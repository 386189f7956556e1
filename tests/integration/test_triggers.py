"""Schedules, anniversaries and event triggers against real databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.audience.ingest import record_events, upsert_contacts
from engine.config import load_settings
from engine.store.db import make_engine
from engine.store.models import Enrollment, ScheduleFiring
from engine.worker import triggers
from engine.worker.runner import Worker
from engine.worker.versions import VersionCache, publish_bundle

PUBLISHED = datetime(2026, 1, 28, 12, 0, tzinfo=UTC)
NEWSLETTER = """\
format_version: 1
id: news
name: News
objective: newsletter
triggers:
  - schedule: "0 9 1 * *"
    timezone: Europe/Paris
entry:
  reentry: always
steps:
  issue:
    type: send
    channel: email
    content:
      subject: News
      text: hello
"""


def _setup(url: str, contacts: int) -> Engine:
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": NEWSLETTER, "templates": {}}, now=PUBLISHED)
    with engine.begin() as conn:
        upsert_contacts(
            conn,
            [
                {"external_id": f"c{i}", "email": f"c{i}@example.com", "attributes": {}}
                for i in range(contacts)
            ],
            PUBLISHED,
        )
    return engine


def _count(engine: Engine, model: type, *where: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def test_a_firing_happens_once_whoever_runs_it(engine_url: str) -> None:
    engine = _setup(engine_url, 30)
    fire = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)  # 09:00 in Paris
    settings = load_settings(env={})
    first, second = Worker(engine, settings, worker_id="a"), Worker(engine, settings, worker_id="b")
    first.run_once(fire - timedelta(seconds=1))
    assert _count(engine, ScheduleFiring) == 0, "not before its time"
    first.run_once(fire + timedelta(seconds=5))
    second.run_once(fire + timedelta(seconds=6))
    first.run_once(fire + timedelta(hours=3))
    assert _count(engine, ScheduleFiring) == 1
    assert _count(engine, Enrollment) == 30
    engine.dispose()


def test_missed_firings_run_once_after_downtime(engine_url: str) -> None:
    engine = _setup(engine_url, 3)
    Worker(engine, load_settings(env={})).run_once(datetime(2026, 5, 15, tzinfo=UTC))
    with engine.connect() as conn:
        fired = conn.execute(select(ScheduleFiring.fire_at)).scalars().all()
    engine.dispose()
    assert fired == [datetime(2026, 5, 1, 7, 0, tzinfo=UTC)], (
        "only the latest missed one (09:00 CEST)"
    )


def test_fan_out_resumes_after_a_crash(engine_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _setup(engine_url, 25)
    monkeypatch.setattr(triggers, "FANOUT_CHUNK", 10)
    now = datetime(2026, 2, 1, 8, 0, 1, tzinfo=UTC)
    with engine.connect() as conn:
        live = VersionCache().live(conn)
    with engine.begin() as conn:
        triggers.fire_schedules(conn, live, now)
    with engine.begin() as conn:
        assert triggers.fan_out(conn, live, now)["entered"] == 10
    with pytest.raises(RuntimeError), engine.begin() as conn:  # dies mid-chunk: rolled back
        triggers.fan_out(conn, live, now)
        raise RuntimeError("worker died")
    assert _count(engine, Enrollment) == 10
    Worker(engine, load_settings(env={})).run_once(now + timedelta(seconds=1))
    with engine.connect() as conn:
        status = conn.execute(select(ScheduleFiring.status)).scalar_one()
        per_contact = conn.execute(
            select(Enrollment.contact_id, func.count()).group_by(Enrollment.contact_id)
        ).all()
    engine.dispose()
    assert status == "done"
    assert len(per_contact) == 25 and {n for _, n in per_contact} == {1}


def test_imported_history_starts_no_journey(engine_url: str) -> None:
    engine = make_engine(engine_url)
    scenario = NEWSLETTER.replace(
        '  - schedule: "0 9 1 * *"\n    timezone: Europe/Paris', "  - event: order_placed"
    ).replace("id: news", "id: thanks")
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": scenario, "templates": {}}, now=PUBLISHED)
    now = PUBLISHED + timedelta(days=1)
    with engine.begin() as conn:
        record_events(conn, [
            {"contact": "old", "name": "order_placed", "properties": {}, "occurred_at": now - timedelta(days=30), "event_key": None},
            {"contact": "new", "name": "order_placed", "properties": {}, "occurred_at": now - timedelta(minutes=2), "event_key": None},
        ], now)  # fmt: skip
    report = Worker(engine, load_settings(env={})).run_once(now)
    engine.dispose()
    assert report.triggers["entered"] == 1
    assert report.claimed == 1, "only the recent order started a journey"
