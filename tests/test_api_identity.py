"""The identity API (/api/identify, /api/contacts/merge) and identifiers on the contacts API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from designer import create_app
from engine.config import load_settings
from engine.runtime.clock import VirtualClock
from engine.store.models import Contact, Event, JournalEntry
from tests.test_api import AUTH, KEY, T0, assert_error


@pytest.fixture
def app(engine_url: str, tmp_path: Path) -> Iterator[Flask]:
    (tmp_path / "identity.yaml").write_text(
        "format_version: 1\nkinds:\n  loyalty_card: {label: Loyalty card}\n", encoding="utf-8"
    )
    settings = load_settings({}, database_url=engine_url, api_key=KEY, data_dir=tmp_path,
                             scenarios_dir=tmp_path)  # fmt: skip
    app = create_app(settings, {"TESTING": True})
    app.extensions["parcours"].clock = VirtualClock(T0)
    app.extensions["parcours"].wake = lambda: None
    yield app
    app.extensions["parcours"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_identify_joins_the_anonymous_visitor_to_the_known_person(
    client: FlaskClient, app: Flask
) -> None:
    seen = client.post("/api/events", headers=AUTH,
                       json={"anonymous_id": "web-1", "name": "page_viewed"})  # fmt: skip
    assert seen.status_code == 202, seen.get_data(as_text=True)
    put = client.put("/api/contacts/ann", headers=AUTH, json={"email": "ann@x.io"})
    assert put.status_code == 200
    first = client.post("/api/identify", headers=AUTH,
                        json={"external_id": "ann", "anonymous_id": "web-1",
                              "identifiers": {"loyalty_card": "L-1"}})  # fmt: skip
    assert first.status_code == 200, first.get_data(as_text=True)
    body = first.get_json()
    assert (body["contact"]["external_id"], len(body["merges"]), body["created"]) == (
        "ann", 1, False)  # fmt: skip
    kinds = {(i["kind"], i["value"]) for i in body["identifiers"]}
    assert {("anonymous_id", "web-1"), ("loyalty_card", "L-1")} <= kinds
    again = client.post("/api/identify", headers=AUTH,
                        json={"external_id": "ann", "anonymous_id": "web-1"}).get_json()  # fmt: skip
    assert again["merges"] == []  # idempotent
    # the absorbed external id answers ann, and events naming it reach ann
    absorbed = client.get("/api/contacts/anonymous:anonymous_id:web-1", headers=AUTH)
    assert absorbed.get_json()["contact"]["external_id"] == "ann"
    assert [e["name"] for e in absorbed.get_json()["events"]] == ["page_viewed"]
    client.post("/api/events", headers=AUTH,
                json={"contact": "anonymous:anonymous_id:web-1", "name": "clicked"})  # fmt: skip
    engine = app.extensions["parcours"].engine
    with engine.connect() as conn:
        ann = conn.execute(select(Contact.id).where(Contact.external_id == "ann")).scalar_one()
        owners = set(conn.execute(select(Event.contact_id)).scalars())
        journal = conn.execute(select(JournalEntry.kind).where(JournalEntry.contact_id == ann))
        assert "merged" in set(journal.scalars())
    assert owners == {ann}


def test_identify_and_merge_errors_are_located(client: FlaskClient) -> None:
    error = assert_error(client.post("/api/identify", headers=AUTH,
                                     json={"identifiers": {"loyalty_crd": "L"}}), 422,
                         "identifiers.loyalty_crd")  # fmt: skip
    assert "loyalty_card" in error["message"]
    assert_error(client.post("/api/identify", headers=AUTH, json={"emial": "a@x.io"}), 422,
                 "emial")  # fmt: skip
    assert_error(client.post("/api/identify", headers=AUTH, json={}), 422, "identifiers")
    assert_error(client.post("/api/identify", headers=AUTH, json={"email": "no"}), 422, "email")
    client.put("/api/contacts/a", headers=AUTH, json={})
    assert_error(client.post("/api/contacts/merge", headers=AUTH,
                             json={"survivor": "a", "absorbed": "zz"}), 404, "absorbed")  # fmt: skip
    assert_error(client.post("/api/contacts/merge", headers=AUTH,
                             json={"survivor": "a", "absorbed": "a"}), 409, "absorbed")  # fmt: skip
    assert_error(client.post("/api/contacts/merge", headers=AUTH, json={"survivor": "a"}), 422,
                 "absorbed")  # fmt: skip
    assert_error(client.post("/api/contacts/merge", json={}), 401, "X-Api-Key")


def test_merge_endpoint_and_identifiers_on_put(client: FlaskClient) -> None:
    put = client.put("/api/contacts/a", headers=AUTH,
                     json={"identifiers": {"loyalty_card": " L-7 "}, "city": "Lyon"})  # fmt: skip
    assert put.status_code == 200, put.get_data(as_text=True)
    assert [(i["kind"], i["value"]) for i in put.get_json()["identifiers"]] == [
        ("loyalty_card", "L-7")]  # fmt: skip
    assert put.get_json()["contact"]["attributes"] == {"city": "Lyon"}
    taken = client.put("/api/contacts/b", headers=AUTH,
                       json={"identifiers": {"loyalty_card": "L-7"}})  # fmt: skip
    assert_error(taken, 409, "identifiers.loyalty_card")
    assert client.get("/api/contacts/b", headers=AUTH).status_code == 404  # nothing written
    client.put("/api/contacts/b", headers=AUTH, json={"tier": "gold"})
    merged = client.post("/api/contacts/merge", headers=AUTH,
                         json={"survivor": "a", "absorbed": "b"})  # fmt: skip
    assert merged.status_code == 200, merged.get_data(as_text=True)
    body = merged.get_json()
    assert body["absorbed"]["external_id"] == "b" and body["merge_id"] >= 1
    assert body["contact"]["attributes"] == {"city": "Lyon", "tier": "gold"}
    # PUT on the absorbed id updates the survivor
    client.put("/api/contacts/b", headers=AUTH, json={"store": "Nice"})
    shown = client.get("/api/contacts/a", headers=AUTH).get_json()
    assert shown["contact"]["attributes"]["store"] == "Nice"
    assert ("external_id", "b") in {(i["kind"], i["value"]) for i in shown["identifiers"]}
