"""The worker with a published scenario that also starts on segment entry and exit: the event
trigger runs as before, the segment triggers wait for membership changes (nothing fires yet)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.audience.ingest import record_events
from engine.config import load_settings
from engine.store.db import make_engine
from engine.store.models import Enrollment
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
