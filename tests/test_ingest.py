"""Contacts and events in: row validation, upsert by external id, append-only events and inbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from engine.audience.ingest import (
    RowInvalid,
    check_json,
    clean_contact,
    clean_event,
    contact_ids,
    parse_instant,
    record_events,
    upsert_contacts,
)
from engine.store.models import Contact, Event, EventInbox

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)


def invalid_field(call: Any, *args: Any) -> str:
    with pytest.raises(RowInvalid) as caught:
        call(*args)
    return caught.value.field


# --- clean_contact -------------------------------------------------------------------------------


def test_clean_contact_normalizes_profile_and_collects_attributes() -> None:
    row = clean_contact(
        {
            "external_id": " c-1 ",
            "email": " Ada@Example.ORG ",
            "phone": "+33 6 12.34-56-78",
            "timezone": "Europe/Paris",
            "locale": "fr-FR",
            "score": "42",
            "tags": "vip|newsletter; ",
            "opted_out": "yes",
            "plan": "pro",
            "visits": "12",
            "ratio": "0.5",
            "zip": "01234",
            "empty": "",
            "attributes": {"nested": {"a": [1, 2]}},
        }
    )
    assert row == {
        "external_id": "c-1",
        "email": "ada@example.org",
        "phone": "+33612345678",
        "timezone": "Europe/Paris",
        "locale": "fr-FR",
        "score": 42,
        "tags": ["vip", "newsletter"],
        "opted_out": True,
        "attributes": {
            "plan": "pro",
            "visits": 12,
            "ratio": 0.5,
            "zip": "01234",  # a leading zero is an identifier, not a number
            "nested": {"a": [1, 2]},
        },
    }


def test_clean_contact_accepts_id_as_external_id_and_json_types() -> None:
    row = clean_contact({"id": 7, "score": 3.0, "opted_out": False, "tags": ["a", " "]})
    assert row == {
        "external_id": "7",
        "score": 3,
        "opted_out": False,
        "tags": ["a"],
        "attributes": {},
    }


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "external_id"),
        ({"external_id": "   "}, "external_id"),
        ({"external_id": "x" * 256}, "external_id"),
        ({"external_id": {"nested": 1}}, "external_id"),
        ({"external_id": True}, "external_id"),
        ({"external_id": "a\x00b"}, "external_id"),
        ({"external_id": "c", "email": "not-an-email"}, "email"),
        ({"external_id": "c", "email": "a@b"}, "email"),
        ({"external_id": "c", "email": "a\x00@b.org"}, "email"),
        ({"external_id": "c", "email": "a@" + "b" * 320 + ".org"}, "email"),
        ({"external_id": "c", "phone": "call me"}, "phone"),
        ({"external_id": "c", "phone": "+33"}, "phone"),
        ({"external_id": "c", "timezone": "Mars/Olympus"}, "timezone"),
        ({"external_id": "c", "timezone": "../../etc/passwd"}, "timezone"),
        ({"external_id": "c", "locale": "fr FR"}, "locale"),
        ({"external_id": "c", "score": "many"}, "score"),
        ({"external_id": "c", "score": 2.5}, "score"),
        ({"external_id": "c", "score": True}, "score"),
        ({"external_id": "c", "score": float("inf")}, "score"),
        ({"external_id": "c", "score": 2**40}, "score"),
        ({"external_id": "c", "opted_out": "maybe"}, "opted_out"),
        ({"external_id": "c", "attributes": {"x": float("nan")}}, "attributes.x"),
        ({"external_id": "c", "note": "nul\x00"}, "attributes.note"),
    ],
)
def test_clean_contact_names_the_bad_field(raw: dict[str, Any], field: str) -> None:
    assert invalid_field(clean_contact, raw) == field


@pytest.mark.parametrize("value", ["1", "true", "Yes", "y", True])
def test_opted_out_truthy(value: Any) -> None:
    assert clean_contact({"external_id": "c", "opted_out": value})["opted_out"] is True


@pytest.mark.parametrize("value", ["0", "false", "No", "n", False])
def test_opted_out_falsy(value: Any) -> None:
    assert clean_contact({"external_id": "c", "opted_out": value})["opted_out"] is False


# --- clean_event ---------------------------------------------------------------------------------


def test_clean_event_defaults_occurred_at_to_now_and_keeps_the_key() -> None:
    event = clean_event(
        {"contact": " c-1 ", "name": "order.paid", "properties": {"total": 12.5}, "event_key": 9},
        T0,
    )
    assert event == {
        "contact": "c-1",
        "name": "order.paid",
        "properties": {"total": 12.5},
        "occurred_at": T0,
        "event_key": "9",
    }


def test_clean_event_converts_occurred_at_to_utc() -> None:
    paris = clean_event(
        {"contact": "c", "name": "x", "occurred_at": "2025-06-01T11:00:00+02:00"}, T0
    )
    naive = clean_event({"contact": "c", "name": "x", "occurred_at": "2025-06-01T09:00:00"}, T0)
    zulu = clean_event({"external_id": "c", "name": "x", "occurred_at": "2025-06-01T09:00Z"}, T0)
    expected = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
    assert paris["occurred_at"] == naive["occurred_at"] == zulu["occurred_at"] == expected
    assert paris["occurred_at"].tzinfo is UTC
    assert paris["event_key"] is None


def test_parse_instant_accepts_aware_datetimes() -> None:
    tokyo = datetime(2025, 6, 1, 18, 0, tzinfo=timezone(timedelta(hours=9)))
    assert parse_instant(tokyo) == datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"name": "x"}, "contact"),
        ({"contact": " ", "name": "x"}, "contact"),
        ({"contact": "c" * 256, "name": "x"}, "contact"),
        ({"contact": ["c"], "name": "x"}, "contact"),
        ({"contact": "c"}, "name"),
        ({"contact": "c", "name": "has space"}, "name"),
        ({"contact": "c", "name": "signup\n"}, "name"),  # "$" alone would let this through
        ({"contact": "c", "name": "x" * 129}, "name"),
        ({"contact": "c", "name": "x", "occurred_at": "yesterday"}, "occurred_at"),
        ({"contact": "c", "name": "x", "occurred_at": "9999-12-31T23:00:00-05:00"}, "occurred_at"),
        ({"contact": "c", "name": "x", "properties": [1, 2]}, "properties"),
        ({"contact": "c", "name": "x", "properties": "text"}, "properties"),
        ({"contact": "c", "name": "x", "properties": {"big": "x" * 70_000}}, "properties"),
        ({"contact": "c", "name": "x", "properties": {"v": float("nan")}}, "properties.v"),
        ({"contact": "c", "name": "x", "properties": {"a": ["\x00"]}}, "properties.a.0"),
        ({"contact": "c", "name": "x", "properties": {"at": T0}}, "properties.at"),
        ({"contact": "c", "name": "x", "event_key": "k" * 256}, "event_key"),
    ],
)
def test_clean_event_names_the_bad_field(raw: dict[str, Any], field: str) -> None:
    assert invalid_field(clean_event, raw, T0) == field


def test_check_json_limits_depth() -> None:
    deep: Any = "leaf"
    for _ in range(32):
        deep = [deep]
    check_json(deep, "")  # 32 levels are fine
    assert invalid_field(check_json, [deep], "") == ".".join(["0"] * 32)


# --- database: upsert and events -----------------------------------------------------------------


@pytest.fixture
def engine(session_factory: sessionmaker[Session]) -> Iterator[Engine]:
    bind = session_factory.kw["bind"]
    assert isinstance(bind, Engine)
    yield bind


def contacts_by_id(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {c.external_id: c for c in conn.execute(select(Contact))}


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_upsert_creates_then_updates_and_merges_attributes(engine: Engine) -> None:
    first = [
        clean_contact({"external_id": "a", "email": "a@x.org", "plan": "free", "city": "Lyon"}),
        clean_contact({"external_id": "b"}),
    ]
    with engine.begin() as conn:
        assert upsert_contacts(conn, first, T0) == (2, 0)
    later = T0 + timedelta(hours=1)
    second = [
        clean_contact({"external_id": "a", "plan": "pro", "score": 5}),
        clean_contact({"external_id": "c", "tags": "x"}),
    ]
    with engine.begin() as conn:
        assert upsert_contacts(conn, second, later) == (1, 1)
    rows = contacts_by_id(engine)
    assert rows["a"].attributes == {"plan": "pro", "city": "Lyon"}
    assert rows["a"].email == "a@x.org"  # not given the second time: kept
    assert rows["a"].score == 5
    assert rows["a"].created_at == T0
    assert rows["a"].updated_at == later
    assert rows["c"].tags == ["x"]
    assert rows["b"].opted_out is False


def test_upsert_merges_rows_for_the_same_contact_within_a_batch(engine: Engine) -> None:
    batch = [
        clean_contact({"external_id": "a", "plan": "free", "city": "Lyon"}),
        clean_contact({"external_id": "a", "plan": "pro", "email": "a@x.org"}),
    ]
    with engine.begin() as conn:
        assert upsert_contacts(conn, batch, T0) == (1, 0)
    row = contacts_by_id(engine)["a"]
    assert row.attributes == {"plan": "pro", "city": "Lyon"}
    assert row.email == "a@x.org"


def test_upsert_of_nothing_is_a_no_op(engine: Engine) -> None:
    with engine.begin() as conn:
        assert upsert_contacts(conn, [], T0) == (0, 0)
        assert record_events(conn, [], T0) == (0, 0)


def test_contact_ids_creates_bare_contacts(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_contacts(conn, [clean_contact({"external_id": "known", "plan": "pro"})], T0)
        ids = contact_ids(conn, ["known", "new", "new"], T0)
    rows = contacts_by_id(engine)
    assert set(ids) == {"known", "new"}
    assert ids["new"] == rows["new"].id
    assert rows["new"].attributes == {}
    assert rows["known"].attributes == {"plan": "pro"}


def event(contact: str, name: str = "visit", key: str | None = None) -> dict[str, Any]:
    return clean_event({"contact": contact, "name": name, "event_key": key}, T0)


def test_events_land_in_events_and_inbox(engine: Engine) -> None:
    with engine.begin() as conn:
        assert record_events(conn, [event("a"), event("b", "signup")], T0) == (2, 0)
    with engine.connect() as conn:
        events = conn.execute(select(Event).order_by(Event.id)).all()
        inbox = conn.execute(select(EventInbox.event_id)).scalars().all()
    assert [e.name for e in events] == ["visit", "signup"]
    assert sorted(inbox) == [e.id for e in events]
    assert all(e.received_at == T0 for e in events)
    assert set(contacts_by_id(engine)) == {"a", "b"}  # unknown contacts were created


def test_event_key_dedupes_within_and_across_batches(engine: Engine) -> None:
    with engine.begin() as conn:
        batch = [event("a", key="k1"), event("a", key="k1"), event("a"), event("a")]
        assert record_events(conn, batch, T0) == (3, 1)  # events without a key never collide
    with engine.begin() as conn:
        assert record_events(conn, [event("a", key="k1"), event("b", key="k2")], T0) == (1, 1)
    assert count(engine, Event) == 4
    assert count(engine, EventInbox) == 4


def test_a_batch_of_only_duplicates_creates_no_contact(engine: Engine) -> None:
    with engine.begin() as conn:
        record_events(conn, [event("a", key="k")], T0)
    with engine.begin() as conn:
        assert record_events(conn, [event("ghost", key="k")], T0) == (0, 1)
    assert set(contacts_by_id(engine)) == {"a"}


def _in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(work())
        except Exception as exc:  # reported to the test, not lost in the thread
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_concurrent_duplicate_event_key_counts_as_duplicate(engine: Engine) -> None:
    first = engine.connect()
    try:
        first.begin()
        record_events(first, [event("a", key="same")], T0)

        def second() -> tuple[int, int]:
            with engine.begin() as conn:
                return record_events(conn, [event("a", key="same")], T0)

        thread, result = _in_thread(second)
        time.sleep(0.3)  # the second transaction now waits on the first one's lock
        first.commit()
    finally:
        first.close()
    thread.join(30)
    assert result == [(0, 1)]
    assert count(engine, Event) == 1


def test_concurrent_creation_of_one_contact_merges(engine: Engine) -> None:
    first = engine.connect()
    try:
        first.begin()
        upsert_contacts(first, [clean_contact({"external_id": "a", "plan": "pro"})], T0)

        def second() -> tuple[int, int]:
            with engine.begin() as conn:
                return upsert_contacts(
                    conn, [clean_contact({"external_id": "a", "city": "Lyon"})], T0
                )

        thread, result = _in_thread(second)
        time.sleep(0.3)
        first.commit()
    finally:
        first.close()
    thread.join(30)
    assert result == [(0, 1)]
    assert contacts_by_id(engine)["a"].attributes == {"plan": "pro", "city": "Lyon"}
