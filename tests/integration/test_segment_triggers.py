"""The worker with a published scenario that also starts on segment entry and exit: the event
trigger runs as before, the segment triggers wait for membership changes (tests/
test_segment_worker.py fires them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.audience.ingest import record_events
from engine.config import load_settings
from engine.store.db import make_engine
from engine.store.models import Enrollment, EventInbox, JournalEntry
from engine.worker.runner import Worker
from engine.worker.versions import VersionCache, publish_bundle

PUBLISHED = datetime(2026, 1, 28, 12, 0, tzinfo=UTC)
SCENARIO = """\
format_version: 1
id: thanks
name: Thanks
objective: loyalty
triggers:
  - segment_entered: premium
  - event: order_placed
  - segment_exited: premium
exit_on:
  - segment_exited: premium
steps:
  hello:
    type: send
    channel: email
    content:
      subject: Thanks
      text: thank you
"""


def test_segment_triggers_fire_nothing_on_events(engine_url: str) -> None:
    engine = make_engine(engine_url)
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": SCENARIO, "templates": {}}, now=PUBLISHED)
    now = PUBLISHED + timedelta(days=1)
    with engine.begin() as conn:
        record_events(conn, [
            {"contact": "a", "name": "order_placed", "properties": {}, "occurred_at": now, "event_key": None},
            {"contact": "b", "name": "premium", "properties": {}, "occurred_at": now, "event_key": None},
        ], now)  # fmt: skip
    report = Worker(engine, load_settings(env={})).run_once(now)
    with engine.connect() as conn:
        live = VersionCache().live(conn)
        entered = conn.execute(select(func.count()).select_from(Enrollment)).scalar_one()
    engine.dispose()
    assert [scenario.id for _, scenario in live] == ["thanks"]
    assert report.triggers["entered"] == 1 and entered == 1, "the order only"


def test_an_audience_on_a_segment_refuses_a_non_member_without_stopping_the_event_pass(
    engine_url: str,
) -> None:
    # the worker answers from stored membership: a contact outside the segment is refused as
    # outside the audience, and the event pass goes on (the inbox drained, others enroll)
    audience = SCENARIO.replace("exit_on:", "audience:\n  segment: premium\nexit_on:")
    other = SCENARIO.replace("id: thanks", "id: plain").replace("name: Thanks", "name: Plain")
    engine = make_engine(engine_url)
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": audience, "templates": {}}, now=PUBLISHED)
        publish_bundle(session, {"yaml": other, "templates": {}}, now=PUBLISHED)
    now = PUBLISHED + timedelta(days=1)
    with engine.begin() as conn:
        record_events(conn, [
            {"contact": "a", "name": "order_placed", "properties": {}, "occurred_at": now, "event_key": None},
        ], now)  # fmt: skip
    Worker(engine, load_settings(env={})).run_once(now)
    with engine.connect() as conn:
        scenarios = conn.execute(select(Enrollment.scenario_id)).scalars().all()
        reasons = (
            conn.execute(select(JournalEntry.reason).where(JournalEntry.scenario_id == "thanks"))
            .scalars()
            .all()
        )
        waiting = conn.execute(select(func.count()).select_from(EventInbox)).scalar_one()
    engine.dispose()
    assert scenarios == ["plain"]
    assert "audience" in reasons and "audience_failed" not in reasons
    assert waiting == 0
