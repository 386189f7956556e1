"""Email provider callbacks end to end: a journey sends a marketing email through a real SMTP
server (aiosmtpd on 127.0.0.1), the provider posts signed delivery reports and spam complaints
to /hooks/email/events, and a complaint blocks the next marketing email."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email_smtp import smtp_channel_from_config
from channels.errors import ChannelConfigError
from channels.sms_callbacks import callback_signature
from designer import Parcours
from engine.delivery.loop import workspace_dispatcher
from engine.policy.loading import full_gate_factory
from engine.runtime.clock import VirtualClock
from engine.store.models import Contact, Suppression
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle
from tests.problems import field_of, legacy
from tests.smtp import Smtp, smtp_server
from tests.web.test_hooks import KEY, T0, Woken, consents, decisions, events, sends

SECRET = "email-callback-secret-for-tests"
HEADER = "X-Signature"  # the default: channels.yaml leaves callback_header out
PATH = "/hooks/email/events"
PROMO = """\
format_version: 1
id: email-promo
name: Email promo
objective: other
topic: promotions
triggers:
  - event: visited
entry:
  reentry: always
steps:
  mail:
    type: send
    channel: email
    content:
      subject: "Spring offers"
      text: "Our spring offers are here."
"""


@pytest.fixture
def smtp() -> Iterator[tuple[Smtp, int]]:
    with smtp_server() as running:
        yield running


@pytest.fixture
def workspace(workspace: Path, smtp: tuple[Smtp, int]) -> Path:
    """The designer's workspace with an smtp provider pointing at the local server."""
    (workspace / "channels.yaml").write_text(
        "email:\n"
        "  provider: smtp\n"
        "  host: 127.0.0.1\n"
        f"  port: {smtp[1]}\n"
        "  security: none\n"
        "  from_address: news@shop.example\n"
        "  callback_secret: ${EMAIL_HOOK_SECRET}\n"
    )
    return workspace


@pytest.fixture
def state(designer_app: Flask, monkeypatch: pytest.MonkeyPatch) -> Parcours:
    monkeypatch.setenv("EMAIL_HOOK_SECRET", SECRET)
    found: Parcours = designer_app.extensions["parcours"]
    found.clock = VirtualClock(T0)
    return found


@pytest.fixture
def client(designer_app: Flask, state: Parcours) -> FlaskClient:
    return designer_app.test_client()


@pytest.fixture
def woken(state: Parcours) -> Woken:
    wake = Woken()
    state.wake = wake
    return wake


def contact(client: FlaskClient, state: Parcours, external_id: str) -> int:
    """A contact opted in to email marketing by an operator; returns its id."""
    put = client.put(f"/api/contacts/{external_id}", json={"email": f"{external_id}@example.org",
                     "timezone": "Europe/Paris"}, headers=KEY)  # fmt: skip
    assert put.status_code in (200, 201), put.get_json()
    consent = {"channel": "email", "topic": "*", "state": "opted_in", "source": "operator"}
    posted = client.post(f"/api/contacts/{external_id}/consents", json=consent, headers=KEY)
    assert posted.status_code == 201, posted.get_json()
    with state.engine.connect() as conn:
        found = conn.execute(select(Contact.id).where(Contact.external_id == external_id))
        return int(found.scalar_one())


def visit_and_deliver(client: FlaskClient, state: Parcours, who: list[str], now: datetime) -> None:
    """The contacts visit; the worker decides (full policy gate), the dispatcher sends by SMTP."""
    state.clock.set(now)  # type: ignore[attr-defined]
    for external_id in who:
        posted = client.post("/api/events", json={"contact": external_id, "name": "visited"},
                             headers=KEY)  # fmt: skip
        assert posted.status_code == 202, posted.get_json()
    settings = state.settings
    worker = Worker(state.engine, settings, state.clock, full_gate_factory(settings),
                    delivering={"email"})  # fmt: skip
    worker.run_once(now)
    # The unsubscribe link of a marketing email needs the workspace's https address.
    dispatcher = workspace_dispatcher(
        state.engine, replace(settings, public_url="https://s.example")
    )
    assert dispatcher is not None
    try:
        dispatcher.run_once(now)
    finally:
        dispatcher.close()


def post(client: FlaskClient, payload: Any, *, secret: str = SECRET,
         headers: dict[str, str] | None = None) -> Any:  # fmt: skip
    """Post an event as the provider does: the signature covers the raw body."""
    body = json.dumps(payload).encode()
    sent = {HEADER: "sha256=" + callback_signature(secret, body)} if headers is None else headers
    return client.post(PATH, data=body, content_type="application/json", headers=sent)


def suppressions(state: Parcours) -> list[tuple[str, str, str, str]]:
    with state.engine.connect() as conn:
        rows = conn.execute(select(Suppression).order_by(Suppression.id)).all()
    return [(r.channel, r.address, r.reason, r.source) for r in rows]


@pytest.fixture
def delivered(
    client: FlaskClient, state: Parcours, smtp: tuple[Smtp, int]
) -> dict[str, tuple[int, str]]:
    """Ana and Bob, each sent the promo by SMTP: their contact id and the email's Message-ID."""
    with Session(state.engine) as db, db.begin():
        publish_bundle(db, {"yaml": PROMO, "templates": {}}, now=T0)
    ids = {"ana": contact(client, state, "ana"), "bob": contact(client, state, "bob")}
    visit_and_deliver(client, state, ["ana", "bob"], T0)
    found = {}
    for name, contact_id in ids.items():
        (send,) = sends(state, contact_id)
        assert send.status == "sent", (send.status, send.error)
        found[name] = (contact_id, str(send.provider_id))
    return found


# --- the email leaves, its outcome comes back ----------------------------------------------------


def test_the_ledger_keeps_the_message_id_the_server_received(
    delivered: dict[str, tuple[int, str]], smtp: tuple[Smtp, int]
) -> None:
    handler, _ = smtp
    by_recipient = {str(m["To"]): str(m["Message-ID"]) for m in handler.arrived}
    assert by_recipient == {
        "ana@example.org": delivered["ana"][1],
        "bob@example.org": delivered["bob"][1],
    }
    assert delivered["ana"][1].startswith("<") and delivered["ana"][1].endswith(">")


def test_a_signed_delivered_event_marks_the_send_delivered_once(
    delivered: dict[str, tuple[int, str]], client: FlaskClient, state: Parcours, woken: Woken
) -> None:
    ana, message_id = delivered["ana"]
    answer = post(client, {"message_id": message_id, "event": "delivered"})
    assert answer.status_code == 200 and answer.get_json() == {"ok": True, "changed": 1}
    (send,) = sends(state, ana)
    assert send.status == "delivered"
    (event,) = events(state, "email_delivered")
    assert event.contact_id == ana and event.event_key == f"delivered:{send.send_key}"
    assert woken.count == 1
    again = post(client, {"message_id": message_id, "event": "failed", "error": "late"})
    assert again.get_json() == {"ok": True, "changed": 0}
    assert sends(state, ana)[0].status == "delivered" and events(state, "email_failed") == []
    assert sends(state, delivered["bob"][0])[0].status == "sent"  # only the reported email
    assert woken.count == 1


def test_a_complaint_suppresses_opts_out_and_blocks_the_next_marketing_email(
    delivered: dict[str, tuple[int, str]], client: FlaskClient, state: Parcours,
    smtp: tuple[Smtp, int], woken: Woken,
) -> None:  # fmt: skip
    (ana, ana_id), (bob, _) = delivered["ana"], delivered["bob"]
    assert post(client, {"message_id": ana_id, "event": "delivered"}).get_json()["changed"] == 1
    answer = post(client, {"message_id": ana_id, "event": "complained"})
    assert answer.status_code == 200 and answer.get_json() == {"ok": True, "changed": 1}
    assert woken.count == 2
    assert suppressions(state) == [("email", "ana@example.org", "spam_complaint", "provider")]
    last = consents(client, "ana")["history"][-1]
    assert (last["channel"], last["topic"], last["state"], last["source"]) == (
        "email", "*", "opted_out", "complaint",
    )  # fmt: skip
    (event,) = events(state, "email_complained")
    (send,) = sends(state, ana)
    assert event.contact_id == ana and event.event_key == f"complained:{send.send_key}"
    assert send.status == "delivered"  # a complaint says nothing about delivery
    # The provider repeats itself: nothing changes twice.
    again = post(client, [{"message_id": ana_id, "event": "complained"}])
    assert again.get_json() == {"ok": True, "changed": 0}
    assert len(consents(client, "ana")["history"]) == 2  # the operator's opt-in, the complaint
    assert len(events(state, "email_complained")) == 1 and woken.count == 2

    # A week later both visit again: Ana's email is held back, Bob's leaves.
    handler, _ = smtp
    before = len(handler.arrived)
    visit_and_deliver(client, state, ["ana", "bob"], T0 + timedelta(days=7))
    reasons = [r for r in decisions(state, ana) if r]
    assert reasons and reasons[-1].startswith(("suppression:", "consent:")), reasons
    assert decisions(state, bob) == []
    assert len(sends(state, ana)) == 1 and len(sends(state, bob)) == 2
    assert [str(m["To"]) for m in handler.arrived[before:]] == ["bob@example.org"]


def test_a_batch_applies_each_event(
    delivered: dict[str, tuple[int, str]], client: FlaskClient, state: Parcours
) -> None:
    (ana, ana_id), (bob, bob_id) = delivered["ana"], delivered["bob"]
    batch = [
        {"message_id": ana_id, "event": "delivered"},
        {"message_id": bob_id, "event": "bounced", "error": "550 5.1.1 user unknown"},
        {"message_id": "<unknown@shop.example>", "event": "delivered"},
    ]
    assert post(client, batch).get_json() == {"ok": True, "changed": 2}
    assert sends(state, ana)[0].status == "delivered"
    (send,) = sends(state, bob)
    assert (send.status, send.error) == ("bounced", "550 5.1.1 user unknown")
    assert suppressions(state) == [("email", "bob@example.org", "hard_bounce", "delivery")]


def test_a_bad_signature_is_refused_and_changes_nothing(
    delivered: dict[str, tuple[int, str]], client: FlaskClient, state: Parcours, woken: Woken
) -> None:
    ana, message_id = delivered["ana"]
    payload = {"message_id": message_id, "event": "complained"}
    body = json.dumps(payload).encode()
    attempts = [
        post(client, payload, secret="another-secret"),
        post(client, payload, headers={}),
        post(
            client, payload, headers={HEADER: "sha256=" + callback_signature(SECRET, body + b" ")}
        ),
    ]
    for answer in attempts:
        assert answer.status_code == 401, answer.get_data(as_text=True)
        assert field_of(answer) == HEADER
    assert sends(state, ana)[0].status == "sent"
    assert suppressions(state) == [] and events(state, "email_complained") == []
    assert [c["state"] for c in consents(client, "ana")["consents"]] == ["opted_in"]
    assert woken.count == 0


def test_an_unknown_message_id_changes_nothing(
    delivered: dict[str, tuple[int, str]], client: FlaskClient, state: Parcours, woken: Woken
) -> None:
    for event in ("delivered", "complained"):
        answer = post(client, {"message_id": "<nobody@shop.example>", "event": event})
        assert answer.status_code == 200 and answer.get_json() == {"ok": True, "changed": 0}
    assert suppressions(state) == [] and woken.count == 0
    assert {s.status for s in sends(state, delivered["ana"][0])} == {"sent"}


def test_a_malformed_event_is_a_400_naming_the_field_and_nothing_is_applied(
    delivered: dict[str, tuple[int, str]], client: FlaskClient, state: Parcours
) -> None:
    message_id = delivered["ana"][1]
    cases: list[tuple[Any, str | None]] = [
        ({"event": "delivered"}, "message_id"),
        ({"message_id": message_id, "event": "opened"}, "event"),
        ({"message_id": message_id, "event": "failed", "error": 42}, "error"),
        ([{"message_id": message_id, "event": "delivered"}, {"message_id": message_id}], "1.event"),
        ("delivered", None),
    ]
    for payload, field in cases:
        answer = post(client, payload)
        assert answer.status_code == 400, payload
        error = legacy(answer)
        assert (error["code"], error["field"]) == ("invalid_payload", field), payload
    broken = b"{not json"
    signature = {HEADER: callback_signature(SECRET, broken)}
    answer = client.post(PATH, data=broken, content_type="application/json", headers=signature)
    assert answer.status_code == 400 and answer.get_json()["code"] == "invalid_payload"
    assert sends(state, delivered["ana"][0])[0].status == "sent"  # the valid first item too


# --- configuration -----------------------------------------------------------------------------


def test_without_an_smtp_provider_the_endpoint_is_404(client: FlaskClient, workspace: Path) -> None:
    (workspace / "channels.yaml").write_text("")
    answer = post(client, {"message_id": "<x@y>", "event": "delivered"})
    assert answer.status_code == 404 and answer.get_json()["code"] == "not_found"


def test_without_a_callback_secret_the_endpoint_refuses_everything(
    client: FlaskClient, workspace: Path
) -> None:
    path = workspace / "channels.yaml"
    path.write_text(path.read_text().replace("  callback_secret: ${EMAIL_HOOK_SECRET}\n", ""))
    answer = post(client, {"message_id": "<x@y>", "event": "delivered"})
    assert answer.status_code == 503
    assert answer.get_json()["code"] == "callback_secret_not_set"


def test_the_callback_secret_stays_out_of_repr_and_errors() -> None:
    config = {"host": "127.0.0.1", "from_address": "news@shop.example",
              "callback_secret": "${HOOK}", "callback_header": "X-Mail-Signature"}  # fmt: skip
    channel = smtp_channel_from_config(config, {"HOOK": "s3cr3t-value"})
    assert channel.settings.callback_secret == "s3cr3t-value"
    assert channel.settings.callback_header == "X-Mail-Signature"
    assert "s3cr3t-value" not in repr(channel)
    with pytest.raises(ChannelConfigError) as raised:
        smtp_channel_from_config({**config, "callback_header": "bad header"}, {"HOOK": "s3cr3t"})
    assert "callback_header" in str(raised.value) and "s3cr3t" not in str(raised.value)
    plain = smtp_channel_from_config({"host": "h", "from_address": "news@shop.example"}, {})
    assert (plain.settings.callback_secret, plain.settings.callback_header) == ("", "X-Signature")
