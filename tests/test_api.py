"""The JSON API through Flask's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from designer import Parcours, create_app
from designer.auth import create_user
from engine.config import load_settings
from engine.runtime.clock import VirtualClock
from engine.store.models import Contact, Enrollment, Event, EventInbox, JournalEntry
from engine.worker.versions import PublishResult, publish_bundle, set_status
from tests.problems import problem_error

KEY = "test-api-key"
AUTH = {"X-Api-Key": KEY}
T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
SCENARIO = """\
format_version: 1
id: manual-demo
name: Manual <demo>
objective: other
triggers:
  - manual: true
steps:
  pause:
    type: wait
    duration: 1d
"""


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def app(engine_url: str, tmp_path: Path, clock: VirtualClock) -> Iterator[Flask]:
    settings = load_settings({}, database_url=engine_url, api_key=KEY, data_dir=tmp_path)
    app = create_app(settings, {"TESTING": True})
    app.extensions["parcours"].clock = clock
    yield app
    app.extensions["parcours"].engine.dispose()


@pytest.fixture
def parcours(app: Flask) -> Parcours:
    found: Parcours = app.extensions["parcours"]
    return found


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def woken(parcours: Parcours) -> list[int]:
    calls: list[int] = []
    parcours.wake = lambda: calls.append(1)
    return calls


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """The response is the API's problem with `status`; returns {code, message, field}."""
    return problem_error(response, status, field)


def publish(engine: Engine, yaml: str = SCENARIO) -> PublishResult:
    with Session(engine) as session, session.begin():
        return publish_bundle(session, {"yaml": yaml, "templates": {}}, now=T0)


# --- auth and errors ---------------------------------------------------------------------------


def test_health_needs_no_key(client: FlaskClient) -> None:
    response = client.get("/api/health")
    # no worker beats here: degraded (tests/test_metrics_health.py covers the rest)
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"]["state"] == "ok"


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "wrong"}, {"X-Api-Key": ""}])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/events"),
        ("get", "/api/contacts/c-1"),
        ("put", "/api/contacts/c-1"),
        ("post", "/api/scenarios/manual-demo/enroll"),
    ],
)
def test_missing_or_wrong_key_is_401(
    client: FlaskClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = getattr(client, method)(path, json={"contact": "c-1", "name": "x"}, headers=headers)
    assert assert_error(response, 401, "X-Api-Key")["code"] == "unauthorized"


def test_no_key_configured_closes_the_api(engine_url: str, tmp_path: Path) -> None:
    settings = load_settings({}, database_url=engine_url, api_key="", data_dir=tmp_path)
    app = create_app(settings, {"TESTING": True})
    try:
        client = app.test_client()
        error = assert_error(client.get("/api/contacts/c", headers={"X-Api-Key": ""}), 503)
        assert "PARCOURS_API_KEY" in error["message"]
        assert client.get("/api/health").get_json()["checks"]["database"]["state"] == "ok"
    finally:
        app.extensions["parcours"].engine.dispose()


def test_unknown_route_and_wrong_method(client: FlaskClient) -> None:
    assert assert_error(client.get("/api/nothing-here", headers=AUTH), 404)["code"] == "not_found"
    response = client.get("/api/events", headers=AUTH)
    assert_error(response, 405)
    assert "POST" in response.headers["Allow"]


def test_unexpected_error_is_a_json_500_without_traceback(app: Flask) -> None:
    def broken() -> str:
        raise RuntimeError("secret detail")

    app.add_url_rule("/api/broken", view_func=broken)
    response = app.test_client().get("/api/broken", headers=AUTH)
    error = assert_error(response, 500)
    assert "secret detail" not in response.get_data(as_text=True)
    assert error["code"] == "internal_server_error"


def test_body_over_one_mebibyte_is_413(client: FlaskClient, parcours: Parcours) -> None:
    body = b'{"contact": "c", "name": "x", "properties": {"pad": "' + b"x" * (1 << 20) + b'"}}'
    response = client.post("/api/events", data=body, content_type="application/json", headers=AUTH)
    assert_error(response, 413)
    assert count(parcours.engine, Event) == 0


def test_non_json_body_is_415(client: FlaskClient) -> None:
    response = client.post("/api/events", data="contact=c&name=x", headers=AUTH)
    assert assert_error(response, 415)["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", None),
        (b"{not json", None),
        (b'{"contact": "c", "name": "x", "properties": {"v": NaN}}', None),
        (b'{"contact": "c", "name": "x", "properties": {"v": 1e999}}', "properties.v"),
        (b"\xff\xfe\xfa", None),
    ],
)
def test_malformed_json_is_400(client: FlaskClient, body: bytes, field: str | None) -> None:
    response = client.post("/api/events", data=body, content_type="application/json", headers=AUTH)
    assert_error(response, 400, field)


@pytest.mark.parametrize("depth", [33, 100_000])
def test_nesting_deeper_than_32_is_400(client: FlaskClient, depth: int) -> None:
    body = "[" * depth + "]" * depth
    response = client.post("/api/events", data=body, content_type="application/json", headers=AUTH)
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "too_deep"


def test_nul_character_is_refused_before_the_database(client: FlaskClient) -> None:
    event = {"contact": "c", "name": "x", "properties": {"note": "a\u0000b"}}
    response = client.post("/api/events", json=event, headers=AUTH)
    assert_error(response, 400, "properties.note")


# --- events ------------------------------------------------------------------------------------


def test_post_one_event_creates_the_contact_and_wakes_the_worker(
    client: FlaskClient, parcours: Parcours, woken: list[int]
) -> None:
    event = {
        "contact": "c-1",
        "name": "signup",
        "properties": {"source": "form"},
        "occurred_at": "2025-06-02T10:00:00+02:00",
    }
    response = client.post("/api/events", json=event, headers=AUTH)
    assert response.status_code == 202
    assert response.get_json() == {"recorded": 1, "duplicates": 0}
    assert woken == [1]
    with parcours.engine.connect() as conn:
        stored = conn.execute(select(Event)).one()
        contact = conn.execute(select(Contact)).one()
        inbox = conn.execute(select(EventInbox.event_id)).scalars().all()
    assert contact.external_id == "c-1"
    assert (stored.contact_id, stored.name) == (contact.id, "signup")
    assert stored.properties == {"source": "form"}
    assert stored.occurred_at == datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
    assert stored.received_at == T0  # the injected clock
    assert inbox == [stored.id]


def test_post_a_list_of_events(client: FlaskClient, parcours: Parcours) -> None:
    events = [{"contact": f"c-{i % 3}", "name": "visit"} for i in range(10)]
    response = client.post("/api/events", json=events, headers=AUTH)
    assert response.status_code == 202
    assert response.get_json() == {"recorded": 10, "duplicates": 0}
    assert count(parcours.engine, Event) == 10
    assert count(parcours.engine, Contact) == 3


def test_an_empty_list_records_nothing(client: FlaskClient, woken: list[int]) -> None:
    response = client.post("/api/events", json=[], headers=AUTH)
    assert response.get_json() == {"recorded": 0, "duplicates": 0}
    assert woken == []


def test_more_than_1000_events_is_422(client: FlaskClient) -> None:
    events = [{"contact": "c", "name": "x"}] * 1001
    assert assert_error(client.post("/api/events", json=events, headers=AUTH), 422)


def test_duplicate_event_key_is_stored_once(
    client: FlaskClient, parcours: Parcours, woken: list[int]
) -> None:
    event = {"contact": "c", "name": "order", "event_key": "order-42"}
    first = client.post("/api/events", json=event, headers=AUTH)
    second = client.post("/api/events", json=event, headers=AUTH)
    assert first.get_json() == {"recorded": 1, "duplicates": 0}
    assert second.status_code == 202
    assert second.get_json() == {"recorded": 0, "duplicates": 1}
    assert count(parcours.engine, Event) == 1
    assert woken == [1]  # nothing new the second time: no need to wake


def test_idempotency_key_header_is_the_event_key(client: FlaskClient, parcours: Parcours) -> None:
    headers = {**AUTH, "Idempotency-Key": "req-7"}
    event = {"contact": "c", "name": "order"}
    assert client.post("/api/events", json=event, headers=headers).get_json()["recorded"] == 1
    again = client.post("/api/events", json=event, headers=headers)
    assert again.get_json() == {"recorded": 0, "duplicates": 1}
    with parcours.engine.connect() as conn:
        assert conn.execute(select(Event.event_key)).scalars().all() == ["req-7"]
    conflicting = client.post("/api/events", json={**event, "event_key": "other"}, headers=headers)
    assert_error(conflicting, 422, "event_key")


def test_idempotency_key_on_a_list_keys_each_event(client: FlaskClient, parcours: Parcours) -> None:
    headers = {**AUTH, "Idempotency-Key": "batch-1"}
    events = [{"contact": "c", "name": "a"}, {"contact": "c", "name": "b", "event_key": "own"}]
    assert client.post("/api/events", json=events, headers=headers).get_json() == {
        "recorded": 2,
        "duplicates": 0,
    }
    replay = client.post("/api/events", json=events, headers=headers)
    assert replay.get_json() == {"recorded": 0, "duplicates": 2}
    with parcours.engine.connect() as conn:
        keys = conn.execute(select(Event.event_key)).scalars().all()
    assert sorted(keys) == ["batch-1:0", "own"]


def test_bad_event_in_a_list_stores_nothing(
    client: FlaskClient, parcours: Parcours, woken: list[int]
) -> None:
    events = [{"contact": "c-1", "name": "ok"}, {"contact": "c-2", "name": "not ok!"}]
    error = assert_error(client.post("/api/events", json=events, headers=AUTH), 422, "1.name")
    assert "not ok!" in error["message"]
    assert count(parcours.engine, Event) == 0
    assert count(parcours.engine, Contact) == 0
    assert woken == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "contact"),
        ({"contact": "c", "name": "x", "occurred_at": "soon"}, "occurred_at"),
        ({"contact": "c", "name": "x", "properties": [1]}, "properties"),
        ([{"contact": "c", "name": "x"}, "text"], "1"),
        ("text", None),
    ],
)
def test_invalid_event_is_422_naming_the_field(
    client: FlaskClient, body: Any, field: str | None
) -> None:
    assert_error(client.post("/api/events", json=body, headers=AUTH), 422, field)


# --- contacts ----------------------------------------------------------------------------------


def test_contact_upsert_creates_then_merges(
    client: FlaskClient, parcours: Parcours, clock: VirtualClock
) -> None:
    created = client.put(
        "/api/contacts/c-1",
        json={
            "email": "Ada@Example.org",
            "timezone": "Europe/Paris",
            "plan": "free",
            "city": "Lyon",
        },
        headers=AUTH,
    )
    assert created.status_code == 200
    body = created.get_json()
    assert body["created"] is True
    assert body["contact"]["external_id"] == "c-1"
    assert body["contact"]["email"] == "ada@example.org"
    assert body["contact"]["attributes"] == {"plan": "free", "city": "Lyon"}
    assert body["contact"]["created_at"] == T0.isoformat()

    clock.advance(timedelta(hours=1))
    updated = client.put(
        "/api/contacts/c-1",
        json={"external_id": "c-1", "attributes": {"plan": "pro"}, "score": 7},
        headers=AUTH,
    )
    body = updated.get_json()
    assert updated.status_code == 200
    assert body["created"] is False
    assert body["contact"]["attributes"] == {"plan": "pro", "city": "Lyon"}
    assert body["contact"]["email"] == "ada@example.org"
    assert body["contact"]["score"] == 7
    assert body["contact"]["updated_at"] == (T0 + timedelta(hours=1)).isoformat()
    assert count(parcours.engine, Contact) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"external_id": "someone-else"}, "external_id"),
        ({"id": "someone-else"}, "id"),
        ({"email": "nope"}, "email"),
        ({"score": "high"}, "score"),
        ({"opted_out": "perhaps"}, "opted_out"),
        ({"attributes": ["a"]}, "attributes"),
        (["not", "an", "object"], None),
    ],
)
def test_invalid_contact_is_422(
    client: FlaskClient, parcours: Parcours, body: Any, field: str | None
) -> None:
    assert_error(client.put("/api/contacts/c-1", json=body, headers=AUTH), 422, field)
    assert count(parcours.engine, Contact) == 0


def test_get_contact(client: FlaskClient, parcours: Parcours) -> None:
    client.put("/api/contacts/c-1", json={"plan": "pro"}, headers=AUTH)
    events = [
        {
            "contact": "c-1",
            "name": f"visit-{i}",
            "occurred_at": (T0 - timedelta(minutes=i)).isoformat(),
        }
        for i in range(60)
    ]
    client.post("/api/events", json=events, headers=AUTH)
    publish(parcours.engine)
    client.post("/api/scenarios/manual-demo/enroll", json={"contacts": ["c-1"]}, headers=AUTH)

    response = client.get("/api/contacts/c-1", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert body["contact"]["attributes"] == {"plan": "pro"}
    assert len(body["events"]) == 50
    assert body["events"][0] == {"name": "visit-0", "occurred_at": T0.isoformat(), "properties": {}}
    assert body["events"][-1]["name"] == "visit-49"
    assert body["enrollments"] == [
        {
            "scenario": "manual-demo",
            "status": "active",
            "step": "pause",
            "entered_at": T0.isoformat(),
        }
    ]


def test_get_unknown_contact_is_404(client: FlaskClient) -> None:
    assert_error(client.get("/api/contacts/nobody", headers=AUTH), 404)


# --- manual entry ------------------------------------------------------------------------------


def test_enroll_into_a_live_scenario_is_idempotent(
    client: FlaskClient, parcours: Parcours, woken: list[int]
) -> None:
    version = publish(parcours.engine)
    for external_id in ("c-1", "c-2"):
        client.put(f"/api/contacts/{external_id}", json={}, headers=AUTH)
    headers = {**AUTH, "Idempotency-Key": "campaign-1"}
    body = {"contacts": ["c-1", "c-2"]}

    first = client.post("/api/scenarios/manual-demo/enroll", json=body, headers=headers)
    assert first.status_code == 200
    assert first.get_json() == {"entered": 2, "duplicate": 0}
    assert woken == [1]
    with parcours.engine.connect() as conn:
        rows = conn.execute(select(Enrollment)).all()
        entered = conn.execute(
            select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "entered")
        ).scalar_one()
    assert len(rows) == 2
    assert {r.version_id for r in rows} == {version.version_id}
    assert {r.entry_key for r in rows} == {"manual:campaign-1"}
    assert all(r.entered_at == T0 and r.due_at == T0 for r in rows)
    assert entered == 2

    again = client.post("/api/scenarios/manual-demo/enroll", json=body, headers=headers)
    assert again.status_code == 200
    assert again.get_json() == {"entered": 0, "duplicate": 2}
    assert count(parcours.engine, Enrollment) == 2


def test_enroll_without_idempotency_key_is_a_new_entry(
    client: FlaskClient, parcours: Parcours
) -> None:
    publish(parcours.engine)
    client.put("/api/contacts/c-1", json={}, headers=AUTH)
    body = {"contacts": ["c-1"]}
    first = client.post("/api/scenarios/manual-demo/enroll", json=body, headers=AUTH)
    assert first.get_json() == {"entered": 1, "duplicate": 0}
    second = client.post("/api/scenarios/manual-demo/enroll", json=body, headers=AUTH)
    # a new entry key, so not a duplicate: the entry rules refuse it (the first is still active)
    assert second.get_json() == {"entered": 0, "duplicate": 0, "already_active": 1}
    assert count(parcours.engine, Enrollment) == 1


def test_enroll_unknown_contacts_is_422_listing_them(
    client: FlaskClient, parcours: Parcours
) -> None:
    publish(parcours.engine)
    client.put("/api/contacts/c-1", json={}, headers=AUTH)
    body = {"contacts": ["c-1", "ghost-1", "ghost-2"]}
    response = client.post("/api/scenarios/manual-demo/enroll", json=body, headers=AUTH)
    error = assert_error(response, 422, "contacts")
    assert "ghost-1" in error["message"] and "ghost-2" in error["message"]
    assert "c-1" not in error["message"]
    assert count(parcours.engine, Enrollment) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "contacts"), ({"contacts": "c-1"}, "contacts"), ({"contacts": ["c-1", 5]}, "contacts.1")],
)
def test_enroll_body_is_checked(client: FlaskClient, body: Any, field: str) -> None:
    response = client.post("/api/scenarios/manual-demo/enroll", json=body, headers=AUTH)
    assert_error(response, 422, field)


def test_enroll_into_a_scenario_that_is_not_live_is_404(
    client: FlaskClient, parcours: Parcours
) -> None:
    client.put("/api/contacts/c-1", json={}, headers=AUTH)
    body = {"contacts": ["c-1"]}
    assert_error(client.post("/api/scenarios/nope/enroll", json=body, headers=AUTH), 404)
    publish(parcours.engine)
    with Session(parcours.engine) as session, session.begin():
        set_status(session, "manual-demo", "paused")
    assert_error(client.post("/api/scenarios/manual-demo/enroll", json=body, headers=AUTH), 404)


# --- status page -------------------------------------------------------------------------------


def test_status_page_is_html_and_escaped(client: FlaskClient, parcours: Parcours) -> None:
    publish(parcours.engine)
    client.put("/api/contacts/c-1", json={"email": "secret@example.org"}, headers=AUTH)
    client.post("/api/scenarios/manual-demo/enroll", json={"contacts": ["c-1"]}, headers=AUTH)
    assert client.get("/status").status_code == 302  # signed out: to the sign-in page
    create_user(parcours.engine, "ops", "viewer", password="correct horse battery")
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").text)
    assert token
    credentials = {"username": "ops", "password": "correct horse battery"}
    client.post("/login", data={**credentials, "csrf_token": token.group(1)})
    response = client.get("/status")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "Manual &lt;demo&gt;" in page and "<demo>" not in page
    assert "entered" in page  # the journal
    assert "secret@example.org" not in page and "c-1" not in page  # no personal data
    assert "<script" not in page and "<link" not in page  # self-contained: no CDN
