"""The path of one posted event, kept short: few statements per event, the wake sent aside."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from engine.audience.ingest import clean_event, record_events, upsert_contacts
from engine.store.db import make_engine
from engine.store.models import Contact, Event, EventInbox
from engine.worker.wake import WakeListener, WakeSender

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    engine = make_engine(engine_url)
    yield engine
    engine.dispose()


def _statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    return seen


def test_one_event_of_a_known_contact_is_one_read_and_one_write(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_contacts(conn, [{"external_id": "a", "attributes": {}}], T0)
    seen = _statements(engine)
    with engine.begin() as conn:
        raw = {"contact": "a", "name": "signup", "properties": {"n": 1}}
        assert record_events(conn, [clean_event(raw, T0)], T0) == (1, 0)
    # PostgreSQL: the contact, then the event and its inbox row in one statement
    assert len(seen) == (2 if engine.dialect.name == "postgresql" else 3), seen
    with engine.connect() as conn:
        (event_id,) = conn.execute(select(Event.id)).scalars().all()
        assert conn.execute(select(EventInbox.event_id)).scalars().all() == [event_id]


def test_an_event_for_a_merged_contact_lands_on_the_survivor(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_contacts(conn, [{"external_id": x, "attributes": {}} for x in ("old", "new")], T0)
        ids = {e: i for e, i in conn.execute(select(Contact.external_id, Contact.id))}
        conn.execute(update(Contact).where(Contact.id == ids["old"])
                     .values(merged_into=ids["new"]))  # fmt: skip
    with engine.begin() as conn:
        record_events(conn, [clean_event({"contact": "old", "name": "visit"}, T0)], T0)
    with engine.connect() as conn:
        assert conn.execute(select(Event.contact_id)).scalars().all() == [ids["new"]]


def test_wakes_asked_together_are_sent_aside_and_coalesced(engine: Engine) -> None:
    woken: list[float] = []
    listener = WakeListener.for_engine(engine, lambda: woken.append(time.monotonic()))
    assert listener is not None
    listener.start()
    sender = WakeSender(engine)
    try:
        assert listener.listening.wait(10)
        time.sleep(0.2)
        woken.clear()  # the PostgreSQL listener's own wake when it connects
        asked = time.monotonic()
        for _ in range(200):  # 200 requests, each after its commit
            sender.wake()
        asked_for = time.monotonic() - asked
        deadline = time.monotonic() + 5
        while not woken and time.monotonic() < deadline:
            time.sleep(0.01)
        assert woken, "the workers were not woken"
        assert woken[0] - asked < 1.0
        assert 1 <= sender.sent < 200  # coalesced: not one notification per request
        assert asked_for < 0.2  # the callers did not wait for the database or the socket
    finally:
        listener.stop()


def test_a_wake_after_a_notification_is_not_lost(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    got = threading.Semaphore(0)
    listener = WakeListener.for_engine(engine, got.release)
    assert listener is not None
    listener.start()
    sender = WakeSender(engine)
    try:
        for _ in range(3):
            sender.wake()
            assert got.acquire(timeout=5)
            time.sleep(0.05)  # the sender is idle again
        assert sender.sent == 3
    finally:
        listener.stop()
        engine.dispose()
