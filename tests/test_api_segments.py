"""The segments part of the JSON API through Flask's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from designer import Parcours, create_app
from engine.audience.ingest import clean_contact, upsert_contacts
from engine.audience.membership import rebuild
from engine.config import load_settings
from engine.runtime.clock import VirtualClock
from engine.spec.segments import load_segments
from engine.store.models import SegmentChange
from tests.problems import assert_problem

KEY = "test-api-key"
AUTH = {"X-Api-Key": KEY}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]
CONTACTS = ["c-1001", "c-1002", "c-2001", "c-2002", "c-2003"]


@pytest.fixture
def app(engine_url: str, tmp_path: Path) -> Iterator[Flask]:
    scenarios = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios" / "segments", scenarios / "segments")
    settings = load_settings(
        {}, database_url=engine_url, api_key=KEY, data_dir=tmp_path, scenarios_dir=scenarios
    )
    app = create_app(settings, {"TESTING": True})
    state: Parcours = app.extensions["parcours"]
    state.clock = VirtualClock(T0)
    with state.engine.begin() as conn:
        upsert_contacts(conn, [clean_contact({"external_id": c}) for c in CONTACTS], T0)
        prospects = load_segments(scenarios / "segments")["prospects"].condition
        assert prospects is not None
        rebuild(conn, "prospects", prospects, T0)
    yield app
    state.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> str:
    return str(assert_problem(response, status, code, field)["detail"])


def test_every_route_needs_the_key(client: FlaskClient) -> None:
    for url in ("/api/segments", "/api/segments/prospects", "/api/segments/prospects/members"):
        assert_error(client.get(url), 401, "unauthorized", "X-Api-Key")
    posted = client.post("/api/segments/vip-list/members", json={"add": ["c-1001"]})
    assert_error(posted, 401, "unauthorized", "X-Api-Key")


def test_the_list_gives_kinds_and_counts(client: FlaskClient) -> None:
    body = client.get("/api/segments", headers=AUTH).get_json()
    found = {s["id"]: s for s in body["segments"]}
    assert (found["prospects"]["kind"], found["prospects"]["count"]) == ("condition", 5)
    assert (found["vip-list"]["kind"], found["vip-list"]["count"]) == ("manual", 0)
    assert found["premium"]["problems"] == []


def test_one_segment_gives_definition_and_trend(client: FlaskClient) -> None:
    body = client.get("/api/segments/prospects", headers=AUTH).get_json()["segment"]
    assert body["count"] == 5 and body["kind"] == "condition"
    assert body["definition"]["condition"] == {
        "event": "order_placed", "count": {"op": "eq", "value": 0},
    }  # fmt: skip
    assert body["definition"]["text"] == "order_placed count = 0"
    assert body["definition"]["yaml"].startswith("# Prospects")
    assert body["trend"] == [{"day": "2026-03-02", "members": 5}]
    message = assert_error(client.get("/api/segments/prospect", headers=AUTH), 404, "not_found")
    assert "did you mean 'prospects'?" in message


def test_members_come_in_keyset_pages(client: FlaskClient) -> None:
    first = client.get("/api/segments/prospects/members?limit=2", headers=AUTH).get_json()
    assert first == {"segment": "prospects", "members": ["c-1001", "c-1002"], "next": "c-1002"}
    seen = first["members"]
    after = first["next"]
    while after:
        page = client.get(
            f"/api/segments/prospects/members?limit=2&after={after}", headers=AUTH
        ).get_json()
        seen += page["members"]
        after = page["next"]
    assert seen == CONTACTS
    bad = client.get("/api/segments/prospects/members?limit=0", headers=AUTH)
    assert_error(bad, 422, "invalid", "limit")
    unknown = client.get("/api/segments/prospects/members?after=nobody", headers=AUTH)
    assert_error(unknown, 422, "invalid", "after")


def test_a_manual_segment_takes_additions_and_removals(app: Flask, client: FlaskClient) -> None:
    url = "/api/segments/vip-list/members"
    added = client.post(url, headers=AUTH, json={"add": ["c-1001", "c-1002", "ghost"]})
    assert added.status_code == 200, added.get_data(as_text=True)
    assert added.get_json() == {
        "segment": "vip-list", "added": 2, "removed": 0, "unknown": ["ghost"], "members": 2,
    }  # fmt: skip
    both = client.post(url, headers=AUTH, json={"add": ["c-2001"], "remove": ["c-1001", "x"]})
    assert both.get_json() == {
        "segment": "vip-list", "added": 1, "removed": 1, "unknown": ["x"], "members": 2,
    }  # fmt: skip
    state: Parcours = app.extensions["parcours"]
    with state.engine.connect() as conn:
        rows = conn.execute(
            select(SegmentChange.change, SegmentChange.reason).where(
                SegmentChange.segment_id == "vip-list"
            )
        ).all()
    assert [tuple(r) for r in rows].count(("entered", "api")) == 3
    contact = client.get("/api/contacts/c-2001", headers=AUTH).get_json()
    assert contact["segments"] == [
        {"id": "prospects", "since": T0.isoformat()},
        {"id": "vip-list", "since": T0.isoformat()},
    ]
    gone = client.get("/api/contacts/c-1001", headers=AUTH).get_json()
    assert [s["id"] for s in gone["segments"]] == ["prospects"]


def test_bad_member_changes_are_refused_where_they_are(client: FlaskClient) -> None:
    url = "/api/segments/vip-list/members"
    condition = client.post(
        "/api/segments/prospects/members", headers=AUTH, json={"add": ["c-1001"]}
    )
    message = assert_error(condition, 409, "condition_segment")
    assert "condition segment" in message
    assert_error(client.post(url, headers=AUTH, json={"add": "c-1001"}), 422, "invalid", "add")
    assert_error(client.post(url, headers=AUTH, json={"add": ["", "x"]}), 422, "invalid", "add.0")
    assert_error(
        client.post(url, headers=AUTH, json={"add": ["a"], "remove": ["a"]}),
        422,
        "invalid",
        "remove",
    )
    assert_error(client.post(url, headers=AUTH, json={"drop": []}), 422, "invalid")
    many = {"add": [f"c{i}" for i in range(1001)]}
    assert_error(client.post(url, headers=AUTH, json=many), 422, "too_many")
    missing = client.post("/api/segments/vip/members", headers=AUTH, json={"add": []})
    assert_error(missing, 404, "not_found")


def test_a_segment_file_with_errors_is_listed_and_refused(app: Flask, client: FlaskClient) -> None:
    state: Parcours = app.extensions["parcours"]
    broken = state.settings.scenarios_dir / "segments" / "broken.yaml"
    broken.write_text("format_version: 1\nid: broken\nname: B\n", encoding="utf-8")
    found = {s["id"]: s for s in client.get("/api/segments", headers=AUTH).get_json()["segments"]}
    assert (
        found["broken"]["kind"] is None
        and "condition or a manual list" in found["broken"]["problems"][0]
    )
    message = assert_error(client.get("/api/segments/broken", headers=AUTH), 409, "segment_invalid")
    assert "broken.yaml" in message
