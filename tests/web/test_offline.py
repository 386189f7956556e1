"""Daily batches of paper mail and calls: a published journey fills them, the partner acks them."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from designer import Parcours
from engine.runtime.clock import VirtualClock
from engine.spec.loader import scenario_bundle
from engine.store.models import Event, Send
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle
from tests.problems import field_of

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
DAY = "2025-06-02"
API = {"X-Api-Key": "k"}
SCENARIO = """\
format_version: 1
id: vip-letter
name: VIP letter and call
objective: loyalty
triggers:
  - event: became_vip
entry:
  reentry: always
steps:
  letter:
    type: send
    channel: mail
    content:
      text: "Dear {{ contact.first_name }}, welcome to the club."
    next: call
  call:
    type: send
    channel: call
    content:
      text: "Call {{ contact.first_name }} to book a fitting."
"""
ADA = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "address": "12 rue des Lilas",
    "postal_code": "75011",
    "city": "Paris",
    "country": "FR",
    "phone": "+33612345678",
}
MALLORY = {
    "first_name": "Mallory",
    "last_name": '=HYPERLINK("http://evil.example","x")',
    "address": "@SUM(1)",
    "city": "Lyon",
    "phone": "+33698765432",
}


@pytest.fixture
def app(designer_app: Flask, state: Parcours, workspace: Path) -> Flask:
    path = workspace / "vip-letter.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    with Session(state.engine) as session, session.begin():
        publish_bundle(session, scenario_bundle(path), str(path), now=T0)
    state.clock = VirtualClock(T0)
    return designer_app


@pytest.fixture
def client(app: Flask, state: Parcours) -> FlaskClient:
    client = app.test_client()
    for contact, profile in (("ada", ADA), ("mallory", MALLORY)):
        r = client.put(f"/api/contacts/{contact}", json=profile, headers=API)
        assert r.status_code == 200, r.get_data(as_text=True)
        r = client.post("/api/events", json={"contact": contact, "name": "became_vip"}, headers=API)
        assert r.get_json()["recorded"] == 1
    Worker(state.engine, state.settings).run_once(T0)
    return client


def items(client: FlaskClient, channel: str, day: str = DAY) -> list[dict[str, Any]]:
    r = client.get(f"/api/batches/{channel}?date={day}", headers=API)
    assert r.status_code == 200, r.get_data(as_text=True)
    found: list[dict[str, Any]] = r.get_json()["items"]
    return found


def ack(client: FlaskClient, channel: str, keys: list[str], status: str = "delivered") -> Any:
    body = {"send_keys": keys, "status": status, "note": "posted"}
    return client.post(f"/api/batches/{channel}/ack", json=body, headers=API)


def test_the_mail_batch_lists_names_addresses_and_text(client: FlaskClient) -> None:
    letters = items(client, "mail")
    assert [i["contact"] for i in letters] == ["ada", "mallory"]
    ada = letters[0]
    assert ada["text"] == "Dear Ada, welcome to the club."
    assert (ada["first_name"], ada["last_name"], ada["city"]) == ("Ada", "Lovelace", "Paris")
    assert (ada["address"], ada["postal_code"], ada["country"]) == (
        "12 rue des Lilas",
        "75011",
        "FR",
    )
    assert (ada["scenario"], ada["step"]) == ("vip-letter", "letter")
    assert "phone" not in ada
    assert letters[1]["postal_code"] is None  # absent from the contact's attributes
    assert items(client, "mail", "2025-06-03") == []


def test_the_call_batch_carries_the_phone(client: FlaskClient) -> None:
    calls = items(client, "call")
    assert [(i["contact"], i["phone"]) for i in calls] == [
        ("ada", "+33612345678"),
        ("mallory", "+33698765432"),
    ]
    assert calls[0]["text"] == "Call Ada to book a fitting."
    assert "address" not in calls[0]


def test_the_csv_is_utf8_with_bom_and_formula_safe(client: FlaskClient) -> None:
    r = client.get(f"/api/batches/mail.csv?date={DAY}", headers=API)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert r.data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(r.data.decode("utf-8-sig"))))
    assert [row["contact"] for row in rows] == ["ada", "mallory"]
    assert rows[0]["address"] == "12 rue des Lilas"
    assert rows[1]["last_name"] == '\'=HYPERLINK("http://evil.example","x")'
    assert rows[1]["address"] == "'@SUM(1)"
    assert rows[1]["postal_code"] == ""
    calls = client.get(f"/api/batches/call.csv?date={DAY}", headers=API)
    first = next(csv.DictReader(io.StringIO(calls.data.decode("utf-8-sig"))))
    assert first["phone"] == "'+33612345678"  # a leading + would be read as a formula


def test_ack_marks_delivered_once_and_records_the_event(
    client: FlaskClient, state: Parcours
) -> None:
    letters = items(client, "mail")
    key = letters[0]["send_key"]
    first = ack(client, "mail", [key])
    assert first.status_code == 200, first.get_data(as_text=True)
    assert first.get_json()["updated"] == [key]
    assert [i["contact"] for i in items(client, "mail")] == ["mallory"]
    again = ack(client, "mail", [key], "failed")
    assert again.get_json()["updated"] == []
    assert again.get_json()["unchanged"] == [{"send_key": key, "status": "delivered"}]
    with Session(state.engine) as session:
        status = session.scalar(select(Send.status).where(Send.send_key == key))
        found = list(session.scalars(select(Event).where(Event.name.like("mail_%"))))
    assert status == "delivered"
    assert [(e.name, e.event_key) for e in found] == [("mail_delivered", f"delivered:{key}")]
    assert found[0].properties["note"] == "posted"


def test_ack_failed_keeps_the_note(client: FlaskClient, state: Parcours) -> None:
    key = items(client, "call")[1]["send_key"]
    r = ack(client, "call", [key], "failed")
    assert r.get_json()["updated"] == [key]
    with Session(state.engine) as session:
        send = session.scalars(select(Send).where(Send.send_key == key)).one()
        names = list(session.scalars(select(Event.name).where(Event.name == "call_failed")))
    assert (send.status, send.error) == ("failed", "posted")
    assert names == ["call_failed"]


def test_keys_of_another_channel_or_of_nothing_are_unknown(
    client: FlaskClient, state: Parcours
) -> None:
    call_key = items(client, "call")[0]["send_key"]
    r = ack(client, "mail", [call_key, "no-such-key"])
    assert r.status_code == 200
    assert r.get_json()["unknown"] == [call_key, "no-such-key"]
    assert r.get_json()["updated"] == []
    with Session(state.engine) as session:
        status = session.scalar(select(Send.status).where(Send.send_key == call_key))
    assert status == "sent"


def test_an_opted_out_contact_leaves_the_batch(client: FlaskClient) -> None:
    r = client.put("/api/contacts/mallory", json={"opted_out": True}, headers=API)
    assert r.status_code == 200
    assert [i["contact"] for i in items(client, "mail")] == ["ada"]


def test_the_day_follows_the_workspace_time_zone(client: FlaskClient, state: Parcours) -> None:
    assert state.settings.timezone == "Europe/Paris"
    late = datetime(2025, 6, 2, 22, 30, tzinfo=UTC)  # already 3 June, 00:30, in Paris
    assert isinstance(state.clock, VirtualClock)
    state.clock.set(late)
    r = client.post("/api/events", json={"contact": "ada", "name": "became_vip"}, headers=API)
    assert r.get_json()["recorded"] == 1
    Worker(state.engine, state.settings).run_once(late)
    assert [i["contact"] for i in items(client, "mail")] == ["ada", "mallory"]
    assert [i["contact"] for i in items(client, "mail", "2025-06-03")] == ["ada"]
    today = client.get("/api/batches/mail", headers=API).get_json()
    assert today["date"] == "2025-06-03" and len(today["items"]) == 1


def test_errors(client: FlaskClient) -> None:
    assert client.get(f"/api/batches/mail?date={DAY}").status_code == 401
    assert client.post("/api/batches/mail/ack", json={"send_keys": ["x"]}).status_code == 401
    missing = client.get("/api/batches/sms", headers=API)
    assert missing.status_code == 404
    assert missing.get_json()["code"] == "not_found"
    bad_date = client.get("/api/batches/mail?date=02/06/2025", headers=API)
    assert bad_date.status_code == 422 and field_of(bad_date) == "date"
    bad_status = client.post(
        "/api/batches/mail/ack", json={"send_keys": ["x"], "status": "lost"}, headers=API
    )
    assert bad_status.status_code == 422 and field_of(bad_status) == "status"
    no_keys = client.post("/api/batches/mail/ack", json={"status": "failed"}, headers=API)
    assert field_of(no_keys) == "send_keys"


def test_the_batch_defaults_to_today(client: FlaskClient, state: Parcours) -> None:
    r = client.get("/api/batches/mail", headers=API)
    assert r.get_json()["date"] == DAY
    assert len(r.get_json()["items"]) == 2
