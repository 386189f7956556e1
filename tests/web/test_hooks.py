"""SMS provider callbacks end to end: a journey sends an SMS through a provider fake (a local
HTTP server), the provider posts signed delivery reports and inbound replies to /hooks, and a
STOP reply blocks the next marketing SMS with a consent reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.sms_callbacks import callback_signature
from designer import Parcours
from engine.delivery.channel_config import load_channels
from engine.delivery.loop import Dispatcher
from engine.policy.loading import full_gate_factory
from engine.runtime.clock import VirtualClock
from engine.store.models import Contact, Event, JournalEntry, Send, Suppression
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle
from tests.problems import legacy
from tests.sms import sms_server

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Paris: no quiet hours
KEY = {"X-Api-Key": "k"}
SECRET = "callback-secret-for-tests"
HEADER = "X-Provider-Signature"
ANA, BOB = "+33612345678", "+33700000002"
PROMO = """\
format_version: 1
id: sms-promo
name: SMS promo
objective: other
topic: promotions
triggers:
  - event: visited
entry:
  reentry: always
steps:
  text:
    type: send
    channel: sms
    content:
      text: "La Boutique : -20% ce week-end. STOP au 36111"
"""


@pytest.fixture
def provider() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with sms_server() as running:
        yield running


@pytest.fixture
def workspace(workspace: Path, provider: tuple[str, list[dict[str, Any]]]) -> Path:
    """The designer's workspace with an sms_http provider pointing at the fake."""
    (workspace / "channels.yaml").write_text(
        "sms:\n"
        "  provider: sms_http\n"
        f"  url: {provider[0]}\n"
        "  allow: [127.0.0.1]\n"  # the fake is on loopback, like an on-premise gateway
        "  allow_http: true\n"
        "  sender: Boutique\n"
        "  callback_secret: ${SMS_CALLBACK_SECRET}\n"
        f"  callback_header: {HEADER}\n"
    )
    return workspace


@pytest.fixture
def app(designer_app: Flask, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setenv("SMS_CALLBACK_SECRET", SECRET)
    return designer_app


@pytest.fixture
def state(app: Flask) -> Parcours:
    found: Parcours = app.extensions["parcours"]
    found.clock = VirtualClock(T0)
    return found


@pytest.fixture
def client(app: Flask, state: Parcours) -> FlaskClient:
    return app.test_client()


class Woken:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def woken(state: Parcours) -> Woken:
    wake = Woken()
    state.wake = wake
    return wake


# --- helpers -----------------------------------------------------------------------------------


def contact(client: FlaskClient, state: Parcours, external_id: str, phone: str) -> int:
    """A contact with a phone, opted in to SMS marketing by an operator; returns its id."""
    put = client.put(
        f"/api/contacts/{external_id}",
        json={"phone": phone, "timezone": "Europe/Paris"},
        headers=KEY,
    )
    assert put.status_code in (200, 201), put.get_json()
    consent = {"channel": "sms", "topic": "*", "state": "opted_in", "source": "operator"}
    posted = client.post(f"/api/contacts/{external_id}/consents", json=consent, headers=KEY)
    assert posted.status_code == 201, posted.get_json()
    with state.engine.connect() as conn:
        found = conn.execute(select(Contact.id).where(Contact.external_id == external_id))
        return int(found.scalar_one())


def visit_and_deliver(
    client: FlaskClient, state: Parcours, workspace: Path, who: list[str], now: datetime
) -> None:
    """The contacts visit; the worker decides (full policy gate), the dispatcher delivers."""
    state.clock.set(now)  # type: ignore[attr-defined]
    for external_id in who:
        posted = client.post("/api/events", json={"contact": external_id, "name": "visited"},
                             headers=KEY)  # fmt: skip
        assert posted.status_code == 202, posted.get_json()
    worker = Worker(
        state.engine, state.settings, state.clock, full_gate_factory(state.settings),
        delivering={"sms"},
    )  # fmt: skip
    worker.run_once(now)
    dispatcher = Dispatcher(state.engine, load_channels(workspace))
    try:
        dispatcher.run_once(now)
    finally:
        dispatcher.close()


def sends(state: Parcours, contact_id: int) -> list[Any]:
    with Session(state.engine) as db:
        query = select(Send).where(Send.contact_id == contact_id).order_by(Send.id)
        return list(db.execute(query).scalars())


def events(state: Parcours, name: str) -> list[Any]:
    with state.engine.connect() as conn:
        return list(conn.execute(select(Event).where(Event.name == name).order_by(Event.id)))


def decisions(state: Parcours, contact_id: int) -> list[str | None]:
    with state.engine.connect() as conn:
        rows = conn.execute(
            select(JournalEntry.reason)
            .where(JournalEntry.contact_id == contact_id, JournalEntry.kind == "decision")
            .order_by(JournalEntry.id)
        )
        return list(rows.scalars())


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {HEADER: "sha256=" + callback_signature(secret, body)}


def post(
    client: FlaskClient, path: str, payload: dict[str, Any], *, form: bool = False,
    secret: str = SECRET, headers: dict[str, str] | None = None,
) -> Any:  # fmt: skip
    """Post a callback as the provider does: the signature covers the raw body."""
    if form:
        from urllib.parse import urlencode

        body, kind = urlencode(payload).encode(), "application/x-www-form-urlencoded"
    else:
        body, kind = json.dumps(payload).encode(), "application/json"
    sent = signed(body, secret) if headers is None else headers
    return client.post(path, data=body, content_type=kind, headers=sent)


def consents(client: FlaskClient, external_id: str) -> dict[str, Any]:
    response = client.get(f"/api/contacts/{external_id}/consents", headers=KEY)
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


@pytest.fixture
def delivered(
    client: FlaskClient, state: Parcours, workspace: Path,
    provider: tuple[str, list[dict[str, Any]]],
) -> dict[str, int]:  # fmt: skip
    """Ana and Bob, each sent the promo SMS through the provider fake; their contact ids."""
    with Session(state.engine) as db, db.begin():
        publish_bundle(db, {"yaml": PROMO, "templates": {}}, now=T0)
    ids = {"ana": contact(client, state, "ana", ANA), "bob": contact(client, state, "bob", BOB)}
    visit_and_deliver(client, state, workspace, ["ana", "bob"], T0)
    return ids


# --- the SMS leaves, reports come back ---------------------------------------------------------


def test_the_provider_receives_the_sms_and_the_ledger_keeps_its_id(
    delivered: dict[str, int], state: Parcours, provider: tuple[str, list[dict[str, Any]]]
) -> None:
    _, received = provider
    assert sorted(r["body"]["to"] for r in received) == [ANA, BOB]
    first = next(r for r in received if r["body"]["to"] == ANA)
    assert first["path"] == "/v1/messages"
    assert first["body"]["from"] == "Boutique"
    assert first["body"]["text"] == "La Boutique : -20% ce week-end. STOP au 36111"
    (send,) = sends(state, delivered["ana"])
    assert first["body"]["reference"] == send.send_key
    assert first["headers"]["Idempotency-Key"] == send.send_key
    assert send.status == "sent" and send.provider_id in ("msg-1", "msg-2")


def test_a_signed_delivery_report_marks_the_send_delivered_once(
    delivered: dict[str, int], client: FlaskClient, state: Parcours, woken: Woken
) -> None:
    (send,) = sends(state, delivered["ana"])
    report = {"id": send.provider_id, "status": "DELIVRD"}
    answer = post(client, "/hooks/sms/status", report)
    assert answer.status_code == 200 and answer.get_json() == {"ok": True, "changed": 1}
    (send,) = sends(state, delivered["ana"])
    assert send.status == "delivered"
    (event,) = events(state, "sms_delivered")
    assert event.contact_id == delivered["ana"] and event.event_key == f"delivered:{send.send_key}"
    assert woken.count == 1  # waits and goals on sms_delivered react at once
    again = post(client, "/hooks/sms/status", {**report, "status": "undelivered"})
    assert again.status_code == 200 and again.get_json() == {"ok": True, "changed": 0}
    assert sends(state, delivered["ana"])[0].status == "delivered"
    assert len(events(state, "sms_delivered")) == 1 and events(state, "sms_failed") == []
    assert woken.count == 1
    (other,) = sends(state, delivered["bob"])
    assert other.status == "sent"  # only the reported message moved


def test_a_form_encoded_report_is_read_like_json(
    delivered: dict[str, int], client: FlaskClient, state: Parcours
) -> None:
    (send,) = sends(state, delivered["bob"])
    answer = post(client, "/hooks/sms/status", {"id": send.provider_id, "status": "failed",
                                                  "error": "30003"}, form=True)  # fmt: skip
    assert answer.status_code == 200 and answer.get_json()["changed"] == 1
    (send,) = sends(state, delivered["bob"])
    assert (send.status, send.error) == ("failed", "30003")


def test_a_bad_or_missing_signature_is_refused_and_changes_nothing(
    delivered: dict[str, int], client: FlaskClient, state: Parcours
) -> None:
    (send,) = sends(state, delivered["ana"])
    report = {"id": send.provider_id, "status": "delivered"}
    body = json.dumps(report).encode()
    attempts = [
        post(client, "/hooks/sms/status", report, secret="another-secret"),
        post(client, "/hooks/sms/status", report, headers={}),
        post(client, "/hooks/sms/status", report, headers={HEADER: "sha256=zz"}),
        # a valid signature of other bytes (the body was altered on the way)
        post(client, "/hooks/sms/status", report, headers=signed(body + b" ")),
        post(client, "/hooks/sms/inbound", {"from": ANA, "text": "STOP"}, secret="x"),
    ]
    for answer in attempts:
        assert answer.status_code == 401, answer.get_data(as_text=True)
        error = legacy(answer)
        assert (error["code"], error["field"]) == ("unauthorized", HEADER)
    assert sends(state, delivered["ana"])[0].status == "sent"
    assert events(state, "sms_delivered") == [] and events(state, "sms_replied") == []
    assert consents(client, "ana")["consents"][0]["state"] == "opted_in"


def test_a_bounce_report_suppresses_the_number(
    delivered: dict[str, int], client: FlaskClient, state: Parcours
) -> None:
    (send,) = sends(state, delivered["bob"])
    report = {"id": send.provider_id, "status": "invalid_number",
              "error": {"code": "21211", "message": "Invalid 'To' number"}}  # fmt: skip
    assert post(client, "/hooks/sms/status", report).get_json()["changed"] == 1
    assert sends(state, delivered["bob"])[0].status == "bounced"
    (event,) = events(state, "sms_bounced")
    assert event.contact_id == delivered["bob"]
    assert event.properties["error"] == "21211 Invalid 'To' number"
    with state.engine.connect() as conn:
        rows = conn.execute(select(Suppression)).all()
    assert [(r.channel, r.address, r.reason, r.contact_id) for r in rows] == [
        ("sms", BOB, "hard_bounce", delivered["bob"])
    ]


def test_a_malformed_callback_is_a_400_naming_the_field(
    delivered: dict[str, int], client: FlaskClient, state: Parcours
) -> None:
    cases = [
        ("/hooks/sms/status", {"status": "delivered"}, "id"),
        ("/hooks/sms/status", {"id": "msg-1", "status": "teleported"}, "status"),
        ("/hooks/sms/inbound", {"text": "STOP"}, "from"),
        ("/hooks/sms/inbound", {"from": ANA}, "text"),
    ]
    for path, payload, field in cases:
        answer = post(client, path, payload)
        assert answer.status_code == 400, (path, payload)
        error = legacy(answer)
        assert (error["code"], error["field"]) == ("invalid_payload", field)
    broken = b"{not json"
    answer = client.post("/hooks/sms/status", data=broken, content_type="application/json",
                         headers=signed(broken))  # fmt: skip
    assert answer.status_code == 400 and answer.get_json()["code"] == "invalid_payload"
    assert {s.status for s in sends(state, delivered["ana"])} == {"sent"}


# --- inbound replies ---------------------------------------------------------------------------


def test_a_stop_reply_opts_out_and_blocks_the_next_marketing_sms(
    delivered: dict[str, int], client: FlaskClient, state: Parcours, workspace: Path,
    provider: tuple[str, list[dict[str, Any]]], woken: Woken,
) -> None:  # fmt: skip
    """The issue's acceptance test: a STOP reply is fed in and the opt-out is seen."""
    ana, bob = delivered["ana"], delivered["bob"]
    answer = post(client, "/hooks/sms/inbound", {"id": "in-1", "from": "33612345678",
                                                  "to": "36111", "text": " STOP "})  # fmt: skip
    assert answer.status_code == 200
    assert answer.get_json() == {"ok": True, "changed": 1, "opted_out": 1}
    assert woken.count == 1
    last = consents(client, "ana")["history"][-1]
    assert (last["channel"], last["topic"], last["state"], last["source"]) == (
        "sms", "*", "opted_out", "sms_stop",
    )  # fmt: skip
    assert last["wording"] == "STOP" and last["evidence"]["keyword"] == "STOP"
    assert [e.properties["text"] for e in events(state, "sms_replied")] == ["STOP"]
    # The provider repeats its callback: nothing is recorded twice.
    again = post(client, "/hooks/sms/inbound", {"id": "in-1", "from": ANA, "text": " STOP "})
    assert again.get_json() == {"ok": True, "changed": 0, "opted_out": 0}
    assert len(consents(client, "ana")["history"]) == 2  # the operator's opt-in, the STOP

    # A week later both visit again: Ana's SMS is held back by consent, Bob's leaves.
    _, received = provider
    before = len(received)
    visit_and_deliver(client, state, workspace, ["ana", "bob"], T0 + timedelta(days=7))
    ana_reasons = [r for r in decisions(state, ana) if r]
    assert ana_reasons and ana_reasons[-1].startswith("consent:"), ana_reasons
    assert decisions(state, bob) == []
    assert len(sends(state, ana)) == 1  # the first SMS only
    assert len(sends(state, bob)) == 2
    assert [r["body"]["to"] for r in received[before:]] == [BOB]


def test_arret_opts_out_too(
    delivered: dict[str, int], client: FlaskClient, state: Parcours
) -> None:
    answer = post(client, "/hooks/sms/inbound", {"from": BOB, "text": "Arrêt"}, form=True)
    assert answer.get_json() == {"ok": True, "changed": 1, "opted_out": 1}
    last = consents(client, "bob")["history"][-1]
    assert (last["state"], last["source"], last["wording"]) == ("opted_out", "sms_stop", "Arrêt")
    assert last["evidence"]["keyword"] == "ARRET"
    assert consents(client, "ana")["consents"][0]["state"] == "opted_in"  # only Bob


def test_a_free_text_reply_is_only_recorded(
    delivered: dict[str, int], client: FlaskClient, state: Parcours, woken: Woken
) -> None:
    answer = post(client, "/hooks/sms/inbound", {"from": ANA, "text": "Don't stop, I love it"})
    assert answer.get_json() == {"ok": True, "changed": 1, "opted_out": 0}
    (reply,) = events(state, "sms_replied")
    assert reply.contact_id == delivered["ana"]
    assert reply.properties == {"text": "Don't stop, I love it"}
    assert [c["state"] for c in consents(client, "ana")["consents"]] == ["opted_in"]
    assert events(state, "unsubscribed") == [] and woken.count == 1


@pytest.mark.parametrize(
    ("text", "keyword"),
    [("Stop pub", "STOP PUB"), ("S\u0422\u041e\u0420", "STOP"), ("Je veux me désinscrire",
     "JE VEUX ME DESINSCRIRE"), ("STOP STOP", "STOP"), ("STOP123456789", "STOP")],
)  # fmt: skip
def test_refusals_as_people_write_them_opt_out(
    delivered: dict[str, int], client: FlaskClient, text: str, keyword: str
) -> None:
    answer = post(client, "/hooks/sms/inbound", {"from": ANA, "text": text})
    assert answer.get_json() == {"ok": True, "changed": 1, "opted_out": 1}
    last = consents(client, "ana")["history"][-1]
    assert (last["state"], last["wording"]) == ("opted_out", text)
    assert last["evidence"]["keyword"] == keyword


@pytest.mark.parametrize(
    "text", ["stop by the store tomorrow", "I will not stop buying", "Cancel my order 1234"]
)
def test_a_sentence_that_contains_a_keyword_does_not_opt_out(
    delivered: dict[str, int], client: FlaskClient, text: str
) -> None:
    answer = post(client, "/hooks/sms/inbound", {"from": ANA, "text": text})
    assert answer.get_json() == {"ok": True, "changed": 1, "opted_out": 0}
    assert [c["state"] for c in consents(client, "ana")["consents"]] == ["opted_in"]


def test_a_reply_from_an_unknown_number_is_recorded_nowhere(
    delivered: dict[str, int], client: FlaskClient, state: Parcours, woken: Woken
) -> None:
    answer = post(client, "/hooks/sms/inbound", {"from": "+33799999999", "text": "STOP"})
    assert answer.get_json() == {"ok": True, "changed": 0, "opted_out": 0}
    assert events(state, "sms_replied") == [] and woken.count == 0


# --- configuration -----------------------------------------------------------------------------


def test_without_an_sms_provider_the_hooks_are_404(client: FlaskClient, workspace: Path) -> None:
    (workspace / "channels.yaml").unlink()
    for path in ("/hooks/sms/status", "/hooks/sms/inbound"):
        answer = post(client, path, {"id": "x", "status": "delivered"})
        assert answer.status_code == 404 and answer.get_json()["code"] == "not_found"


def test_without_a_callback_secret_the_hooks_refuse_everything(
    client: FlaskClient, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = workspace / "channels.yaml"
    path.write_text(path.read_text().replace("  callback_secret: ${SMS_CALLBACK_SECRET}\n", ""))
    answer = post(client, "/hooks/sms/status", {"id": "x", "status": "delivered"})
    assert answer.status_code == 503
    assert answer.get_json()["code"] == "callback_secret_not_set"


def test_the_hooks_need_no_session_nor_csrf_token(client: FlaskClient) -> None:
    """A provider has no cookie: the signature alone lets it in (checked before the body)."""
    answer = post(client, "/hooks/sms/status", {"id": "unknown", "status": "delivered"})
    assert answer.status_code == 200 and answer.get_json() == {"ok": True, "changed": 0}
