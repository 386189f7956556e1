"""Storage layer: migrations match the models, rows round-trip, constraints hold, SQLite locks."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, insert, inspect, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from engine.errors import ConfigError
from engine.store import db
from engine.store.models import (
    Base,
    Contact,
    Cursor,
    Enrollment,
    Event,
    JournalEntry,
    ScenarioRecord,
    ScenarioVersion,
    ScheduleFiring,
    Send,
    UTCDateTime,
)

# An aware instant in a non-UTC zone: it must come back as the same instant, tagged UTC.
PARIS_SUMMER = timezone(timedelta(hours=2))
T0 = datetime(2025, 6, 1, 9, 30, 15, 123456, tzinfo=PARIS_SUMMER)
HEAD = ScriptDirectory.from_config(db.alembic_config()).get_current_head()


def schema_diff(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_server_default": True})
        return list(compare_metadata(context, Base.metadata))


# --- migrations ----------------------------------------------------------------------------------


def test_single_head() -> None:
    assert len(ScriptDirectory.from_config(db.alembic_config()).get_heads()) == 1


def test_migration_matches_models(engine_url: str) -> None:
    engine = db.make_engine(engine_url)
    try:
        assert db.current_revision(engine) == HEAD
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_then_upgrade_again(engine_url: str) -> None:
    engine = db.make_engine(engine_url)
    try:
        db.downgrade(engine, "base")
        assert db.current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        db.upgrade(engine)
        assert db.current_revision(engine) == HEAD
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_upgrade_in_memory_sqlite_keeps_the_tables() -> None:
    engine = db.make_engine("sqlite://")
    db.upgrade(engine)
    assert db.current_revision(engine) == HEAD
    assert "enrollments" in inspect(engine).get_table_names()
    engine.dispose()


# --- engines --------------------------------------------------------------------------------------


def test_make_engine_picks_drivers_and_refuses_others(tmp_path: Path) -> None:
    pg = db.make_engine("postgresql://u@localhost/x")
    assert pg.url.drivername == "postgresql+psycopg"
    pg.dispose()
    with pytest.raises(ConfigError, match="unsupported"):
        db.make_engine("mysql://u@localhost/x")
    engine = db.make_engine(f"sqlite:///{tmp_path / 'new' / 'dir' / 'p.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM")  # fails inside a transaction
    with engine.connect() as conn:  # back from AUTOCOMMIT: BEGIN is still ours
        assert conn.connection.dbapi_connection.isolation_level is None  # type: ignore[union-attr]
    engine.dispose()


def test_utc_datetime_refuses_naive_and_normalises() -> None:
    column_type, dialect = UTCDateTime(), sqlite.dialect()
    with pytest.raises(ValueError, match="naive"):
        column_type.process_bind_param(datetime(2025, 1, 1), dialect)
    assert column_type.process_bind_param(T0, dialect) == T0
    assert column_type.process_bind_param(T0, dialect).tzinfo is UTC  # type: ignore[union-attr]
    assert db.utcnow().tzinfo is UTC


# --- round trips ----------------------------------------------------------------------------------


def seed(session: Session) -> dict[str, int]:
    """Insert one row of every model, linked together; return their ids."""
    contact = Contact(external_id="c-1", email="a@example.com", timezone="Europe/Paris")
    scenario = ScenarioRecord(id="welcome", name="Welcome", status="live")
    session.add_all([contact, scenario])
    session.flush()
    version = ScenarioVersion(
        scenario_id="welcome", number=1, content_hash="a" * 64, bundle={"yaml": "id: welcome"}
    )
    event = Event(contact_id=contact.id, name="signed_up", occurred_at=T0, event_key="k-1")
    session.add_all([version, event])
    session.flush()
    scenario.current_version_id = version.id
    enrollment = Enrollment(
        scenario_id="welcome",
        version_id=version.id,
        contact_id=contact.id,
        entry_key=str(event.id),
        trigger_event_id=event.id,
        entered_at=T0,
        due_at=T0 + timedelta(days=1),
        step_id="wait_1d",
    )
    session.add(enrollment)
    session.flush()
    send = Send(
        send_key=f"1:{enrollment.id}:mail:0",
        enrollment_id=enrollment.id,
        contact_id=contact.id,
        scenario_id="welcome",
        version_id=version.id,
        step_id="mail",
        channel="email",
        kind="marketing",
        created_at=T0,
    )
    session.add_all(
        [
            send,
            JournalEntry(at=T0, kind="entered", enrollment_id=enrollment.id, data={"n": 1}),
            ScheduleFiring(scenario_id="welcome", fire_at=T0),
            Cursor(name="triggers", value=event.id),
        ]
    )
    session.commit()
    return {"contact": contact.id, "enrollment": enrollment.id, "send": send.id}


def test_every_model_round_trips(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        ids = seed(session)
    with session_factory() as session:
        contact = session.get_one(Contact, ids["contact"])
        assert (contact.attributes, contact.tags, contact.score, contact.opted_out) == (
            {},
            [],
            0,
            False,
        )
        assert contact.created_at.tzinfo is UTC
        scenario = session.get_one(ScenarioRecord, "welcome")
        version = session.get_one(ScenarioVersion, scenario.current_version_id)
        assert version.bundle == {"yaml": "id: welcome"}
        event = session.scalars(select(Event)).one()
        assert event.occurred_at == T0 and event.occurred_at.tzinfo is UTC
        assert event.received_at.tzinfo is UTC
        enrollment = session.get_one(Enrollment, ids["enrollment"])
        assert enrollment.status == "active" and enrollment.vars == {}
        assert enrollment.due_at == T0 + timedelta(days=1)
        assert enrollment.due_at is not None and enrollment.due_at.tzinfo is UTC
        assert (enrollment.attempt, enrollment.visits, enrollment.lease_until) == (0, 0, None)
        send = session.get_one(Send, ids["send"])
        assert (send.status, send.payload, send.attempts, send.created_at) == ("queued", {}, 0, T0)
        journal = session.scalars(select(JournalEntry)).one()
        assert (journal.kind, journal.data, journal.at) == ("entered", {"n": 1}, T0)
        assert session.scalars(select(ScheduleFiring.fire_at)).one() == T0
        assert session.get_one(Cursor, "triggers").value == event.id


def test_json_round_trips_nested_values(session_factory: sessionmaker[Session]) -> None:
    attributes = {"name": "Zoé", "cart": {"items": [{"sku": "A", "qty": 2}], "total": 12.5}}
    with session_factory() as session:
        session.add(Contact(external_id="c-1", attributes=attributes, tags=["vip", "fr"]))
        session.commit()
    with session_factory() as session:
        contact = session.scalars(select(Contact)).one()
        assert contact.attributes == attributes
        assert contact.tags == ["vip", "fr"]


def test_datetimes_come_back_utc_whatever_the_session_zone(engine_url: str) -> None:
    engine = db.make_engine(engine_url)
    try:
        with db.make_session_factory(engine)() as session:
            if engine.dialect.name == "postgresql":
                session.execute(text("SET TIME ZONE 'Asia/Tokyo'"))
            session.add(ScenarioRecord(id="s", name="S", created_at=T0, updated_at=T0))
            session.flush()
            stored = session.scalars(select(ScenarioRecord.created_at)).one()
            assert stored == T0 and stored.tzinfo is UTC
            due = select(ScenarioRecord.id).where(ScenarioRecord.created_at <= T0)
            assert session.scalars(due).all() == ["s"]
    finally:
        engine.dispose()


def test_naive_datetime_is_refused(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        session.add(Contact(external_id="c-1", created_at=datetime(2025, 1, 1)))
        with pytest.raises(StatementError) as error:
            session.flush()
        assert isinstance(error.value.orig, ValueError)


# --- constraints ----------------------------------------------------------------------------------


def duplicate_of(row: str, ids: dict[str, int], session: Session) -> Base:
    if row == "send":
        send = session.get_one(Send, ids["send"])
        return Send(
            send_key=send.send_key,
            contact_id=send.contact_id,
            scenario_id="welcome",
            step_id="mail",
            channel="sms",
            kind="marketing",
            created_at=T0,
        )
    if row == "enrollment":
        first = session.get_one(Enrollment, ids["enrollment"])
        return Enrollment(
            scenario_id=first.scenario_id,
            version_id=first.version_id,
            contact_id=first.contact_id,
            entry_key=first.entry_key,
            entered_at=T0,
        )
    if row == "firing":  # same instant, other zone: still a duplicate
        return ScheduleFiring(scenario_id="welcome", fire_at=T0.astimezone(UTC))
    if row == "event":
        return Event(contact_id=ids["contact"], name="x", occurred_at=T0, event_key="k-1")
    return Event(contact_id=ids["contact"] + 999, name="orphan", occurred_at=T0)


@pytest.mark.parametrize("row", ["send", "enrollment", "firing", "event", "foreign_key"])
def test_constraints_refuse_duplicates_and_orphans(
    session_factory: sessionmaker[Session], row: str
) -> None:
    with session_factory() as session:
        ids = seed(session)
        session.add(duplicate_of(row, ids, session))
        with pytest.raises(IntegrityError):
            session.commit()


# --- SQLite locking -------------------------------------------------------------------------------


def test_sqlite_transactions_take_the_write_lock_at_begin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    db.upgrade(url)
    holder, impatient = db.make_engine(url), db.make_engine(url, sqlite_timeout=0.1)
    patient = db.make_engine(url, sqlite_timeout=10)
    try:
        with holder.connect() as first:
            first.begin()  # no statement yet: only BEGIN IMMEDIATE can hold the lock now
            with impatient.connect() as second, pytest.raises(OperationalError, match="locked"):
                second.begin()
            with db.make_session_factory(impatient)() as session:
                with pytest.raises(OperationalError, match="locked"):
                    session.execute(select(Contact.id))
            # A DEFERRED reader is not blocked under WAL: the lock above came from IMMEDIATE.
            reader = impatient.execution_options(**{db.SQLITE_BEGIN: "DEFERRED"})
            with reader.connect() as third:
                assert third.execute(select(Contact.id)).all() == []
            releaser = threading.Timer(0.3, first.commit)
            releaser.start()
            started = time.monotonic()
            with patient.begin() as waiting:
                waiting.execute(insert(Contact).values(external_id="c"))
            assert time.monotonic() - started >= 0.2
            releaser.join()
    finally:
        for engine in (holder, impatient, patient):
            engine.dispose()
