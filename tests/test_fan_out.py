"""A schedule's fan-out, set-based: a fixed number of statements per chunk, the entry rules and
the audience applied in SQL, a redone chunk entering nobody twice."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.audience.ingest import upsert_contacts
from engine.store.db import make_engine
from engine.store.models import Contact, Enrollment, JournalEntry, ScheduleFiring
from engine.worker import triggers
from engine.worker.versions import VersionCache, publish_bundle

PUBLISHED = datetime(2026, 1, 28, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 2, 1, 8, 0, 1, tzinfo=UTC)
NEWS = """\
format_version: 1
id: news
name: News
objective: newsletter
triggers:
  - schedule: "0 9 1 * *"
    timezone: Europe/Paris
entry:
  reentry: {reentry}
{audience}steps:
  issue:
    type: send
    channel: email
    content:
      subject: News
      text: hello
"""
WANTS_NEWS = """audience:
  not:
    attribute: newsletter
    op: eq
    value: false
"""
EXPRESSION = """audience:
  expr: "contact.newsletter != false"
"""


def _setup(url: str, contacts: int, reentry: str = "always", audience: str = "") -> Engine:
    engine = make_engine(url)
    text = NEWS.format(reentry=reentry, audience=audience)
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": text, "templates": {}}, now=PUBLISHED)
    with engine.begin() as conn:
        upsert_contacts(conn, [
            {"external_id": f"c{i}", "email": f"c{i}@example.com",
             "attributes": {"newsletter": i % 3 != 0}}
            for i in range(contacts)
        ], PUBLISHED)  # fmt: skip
    return engine


def _fan_out_all(engine: Engine) -> list[dict[str, int]]:
    with engine.connect() as conn:
        live = VersionCache().live(conn)
    with engine.begin() as conn:
        triggers.fire_schedules(conn, live, NOW)
    calls = []
    while True:
        with engine.begin() as conn:
            counts = triggers.fan_out(conn, live, NOW)
        if not counts:
            return calls
        calls.append(counts)


def _entered(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(select(Enrollment.contact_id).where(Enrollment.scenario_id == "news"))
            .scalars()
            .all()
        )


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_chunk_never_reads_its_contacts_into_python(
    engine_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _setup(engine_url, 55, audience=WANTS_NEWS)

    def per_contact(*args: object, **kwargs: object) -> dict[str, int]:
        raise AssertionError("the fan-out read its contacts one by one")

    monkeypatch.setattr(triggers, "enroll", per_contact)
    monkeypatch.setattr(triggers, "FANOUT_CHUNK", 20)
    with _statements(engine) as seen:
        calls = _fan_out_all(engine)
    assert [c["fanned_out"] for c in calls] == [20, 20, 15]
    assert len(_entered(engine)) == 36
    assert len(seen) < 55, "statements per chunk, not per contact"
    engine.dispose()


def test_the_audience_and_the_tombstones_are_applied_in_sql(
    engine_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _setup(engine_url, 30, audience=WANTS_NEWS)
    monkeypatch.setattr(triggers, "FANOUT_CHUNK", 7)
    with engine.begin() as conn:
        ids = conn.execute(select(Contact.id).order_by(Contact.id)).scalars().all()
        conn.execute(update(Contact).where(Contact.id == ids[1]).values(erased_at=PUBLISHED))
    calls = _fan_out_all(engine)
    wanted = [cid for i, cid in enumerate(ids) if i % 3 != 0 and i != 1]
    assert _entered(engine) == wanted
    assert sum(c["entered"] for c in calls) == len(wanted)
    with engine.connect() as conn:
        journaled = conn.execute(
            select(func.count()).where(JournalEntry.kind == "entered")
        ).scalar_one()
        status = conn.execute(select(ScheduleFiring.status)).scalar_one()
    assert journaled == len(wanted) and status == "done"
    engine.dispose()


def test_an_expression_audience_is_evaluated_in_python(engine_url: str) -> None:
    engine = _setup(engine_url, 12, audience=EXPRESSION)
    _fan_out_all(engine)
    with engine.connect() as conn:
        ids = conn.execute(select(Contact.id).order_by(Contact.id)).scalars().all()
    assert _entered(engine) == [cid for i, cid in enumerate(ids) if i % 3 != 0]
    engine.dispose()


def test_entry_rules_refuse_in_sql(engine_url: str) -> None:
    engine = _setup(engine_url, 6, reentry="never")
    with engine.connect() as conn:
        live = VersionCache().live(conn)
        ids = conn.execute(select(Contact.id).order_by(Contact.id)).scalars().all()
    version_id = live[0][0]
    old = {"scenario_id": "news", "version_id": version_id, "step_id": "issue", "visits": 0,
           "vars": {}, "attempt": 0, "entered_at": PUBLISHED - timedelta(days=40)}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(Enrollment), [
            {**old, "contact_id": ids[0], "status": "completed", "entry_key": "earlier"},
            {**old, "contact_id": ids[1], "status": "active", "entry_key": "earlier",
             "due_at": NOW + timedelta(days=1)},
        ])  # fmt: skip
    _fan_out_all(engine)
    with engine.connect() as conn:
        fresh = conn.execute(
            select(Enrollment.contact_id).where(Enrollment.entry_key.like("schedule:%"))
        ).scalars()
        assert sorted(fresh) == ids[2:], "reentry never: no second entry, active or ended"
    engine.dispose()


def test_a_redone_chunk_enters_nobody_twice(engine_url: str) -> None:
    engine = _setup(engine_url, 8)
    _fan_out_all(engine)
    with engine.begin() as conn:  # the cursor lost, as if the chunk's commit had not landed
        conn.execute(update(ScheduleFiring).values(status="pending", cursor=0))
    calls = _fan_out_all(engine)
    assert calls[0]["entered"] == 0 and calls[0]["not_entered"] == 8
    assert len(_entered(engine)) == 8
    engine.dispose()


@pytest.mark.pg
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SKIP LOCKED
def test_a_worker_that_finds_the_firing_held_helps_with_a_later_chunk(
    engine_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another worker holds the pending firing (fanning a chunk out), this one is told it
    is held, not that nothing is pending: it keeps looking, and fans the next chunk out."""
    from engine.config import load_settings
    from engine.worker.runner import Worker

    monkeypatch.setattr(triggers, "FANOUT_CHUNK", 2)
    engine = _setup(engine_url, 5)
    worker = Worker(engine, load_settings(env={}))
    with engine.connect() as conn:
        live = VersionCache().live(conn)
    with engine.begin() as conn:
        triggers.fire_schedules(conn, live, NOW)
    with engine.connect() as other, other.begin():  # another worker, mid-chunk
        other.execute(select(ScheduleFiring).with_for_update())
        with engine.begin() as conn:
            assert triggers.fan_out(conn, live, NOW) == {"fan_out_held": 1}
        report = worker.run_once(NOW)
        assert "entered" not in report.triggers and worker._fanout_pending
        assert report.triggers["fan_out_held"] == 1  # asked once, not a hundred times a pass
    worker.run_once(NOW)  # the other worker let go: this one fans the rest out
    assert len(_entered(engine)) == 5
    with engine.connect() as conn:
        assert conn.execute(select(ScheduleFiring.status)).scalar_one() == "done"
    engine.dispose()
