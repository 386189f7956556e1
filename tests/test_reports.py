"""Provider reports on the ledger (engine.insights.reports), on SQLite and PostgreSQL: a delivery report
moves a sent SMS forward once; an inbound STOP opts the contact out with its evidence."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from engine.audience.ingest import clean_contact, upsert_contacts
from engine.insights.reports import apply_delivery_report, apply_inbound_sms, record_inbound_sms
from engine.policy.consent import consent_history, consent_snapshot
from engine.store.db import make_engine
from engine.store.models import ConsentRecord, Contact, Event, Send, Suppression

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
ANA_PHONE = "+33612345678"


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    made = make_engine(engine_url)
    yield made
    made.dispose()


def add_contact(engine: Engine, external_id: str, phone: str | None) -> int:
    """A contact cleaned as the API and imports clean it (compact phone)."""
    raw = {"external_id": external_id, "phone": phone, "timezone": "Europe/Paris"}
    with engine.begin() as conn:
        upsert_contacts(conn, [clean_contact(raw)], T0)
        return int(
            conn.execute(select(Contact.id).where(Contact.external_id == external_id)).scalar_one()
        )


def add_send(
    engine: Engine, contact_id: int, send_key: str, provider_id: str | None,
    channel: str = "sms", status: str = "sent",
) -> None:  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            insert(Send).values(
                send_key=send_key, contact_id=contact_id, scenario_id="promo", step_id="sms",
                channel=channel, topic="promotions", kind="marketing", status=status,
                payload={}, attempts=1, provider_id=provider_id, created_at=T0, sent_at=T0,
            )
        )  # fmt: skip


def send(engine: Engine, send_key: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Send).where(Send.send_key == send_key)).one()


def events(engine: Engine, name: str | None = None) -> list[Any]:
    query = select(Event).order_by(Event.id)
    if name is not None:
        query = query.where(Event.name == name)
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def report(engine: Engine, provider_id: str, status: str, error: str | None = None) -> bool:
    with engine.begin() as conn:
        return apply_delivery_report(conn, "sms", provider_id, status, error, T0)


def inbound(engine: Engine, phone: str, text: str, message_id: str | None = None) -> str | None:
    with engine.begin() as conn:
        return apply_inbound_sms(conn, phone, text, T0, message_id=message_id)


def is_suppressed_phone(engine: Engine, phone: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(select(Suppression.id).where(Suppression.address == phone)).first()
    return found is not None


def history(engine: Engine, contact_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return consent_history(conn, contact_id)


# --- delivery reports --------------------------------------------------------------------------


def test_a_delivered_report_moves_the_send_once_and_records_the_event(engine: Engine) -> None:
    ana = add_contact(engine, "ana", ANA_PHONE)
    add_send(engine, ana, "s-ana", "msg-1")
    assert report(engine, "msg-1", "delivered") is True
    assert send(engine, "s-ana").status == "delivered"
    (event,) = events(engine, "sms_delivered")
    assert (event.contact_id, event.event_key) == (ana, "delivered:s-ana")
    assert event.properties == {"send_key": "s-ana", "channel": "sms", "error": ""}
    # The same report again, then a late contradicting one: nothing moves back.
    assert report(engine, "msg-1", "delivered") is False
    assert report(engine, "msg-1", "failed", "expired") is False
    assert report(engine, "msg-1", "bounced") is False
    assert send(engine, "s-ana").status == "delivered" and send(engine, "s-ana").error is None
    assert [e.name for e in events(engine)] == ["sms_delivered"]
    assert not is_suppressed_phone(engine, ANA_PHONE)


def test_reports_that_cannot_move_a_send_change_nothing(engine: Engine) -> None:
    ana = add_contact(engine, "ana", ANA_PHONE)
    add_send(engine, ana, "s-mail", "msg-1", channel="email")  # same id, another channel
    add_send(engine, ana, "s-queued", None, status="queued")
    add_send(engine, ana, "s-sent", "msg-2")
    assert report(engine, "msg-1", "delivered") is False  # an email's id, not an SMS
    assert report(engine, "unknown", "delivered") is False
    assert report(engine, "msg-2", "sent") is False  # "accepted" is not a final outcome
    assert [send(engine, k).status for k in ("s-mail", "s-queued", "s-sent")] == [
        "sent", "queued", "sent",
    ]  # fmt: skip
    assert events(engine) == []


def test_a_bounce_suppresses_the_number_and_a_failure_does_not(engine: Engine) -> None:
    ana, bob = (
        add_contact(engine, "ana", ANA_PHONE),
        add_contact(engine, "bob", "+33 7 00 00 00 02"),
    )
    add_send(engine, ana, "s-ana", "msg-a")
    add_send(engine, bob, "s-bob", "msg-b")
    assert report(engine, "msg-a", "bounced", "21211 Invalid number") is True
    assert report(engine, "msg-b", "failed", "30003 Unreachable handset") is True
    assert (send(engine, "s-ana").status, send(engine, "s-ana").error) == (
        "bounced", "21211 Invalid number",
    )  # fmt: skip
    assert send(engine, "s-bob").status == "failed"
    (bounced,) = events(engine, "sms_bounced")
    assert bounced.contact_id == ana and bounced.properties["error"] == "21211 Invalid number"
    assert [e.contact_id for e in events(engine, "sms_failed")] == [bob]
    with engine.connect() as conn:
        rows = conn.execute(select(Suppression)).all()
    assert [(r.channel, r.address, r.reason, r.source, r.contact_id) for r in rows] == [
        ("sms", ANA_PHONE, "hard_bounce", "delivery", ana)
    ]


# --- inbound replies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keyword"), [("STOP", "STOP"), ("  Arrêt ", "ARRET"), ("stop sms merci", "STOP SMS")]
)
def test_a_stop_reply_opts_the_contact_out_with_its_evidence(
    engine: Engine, text: str, keyword: str
) -> None:
    ana = add_contact(engine, "ana", ANA_PHONE)
    assert inbound(engine, ANA_PHONE, text, message_id="in-1") == keyword
    (record,) = history(engine, ana)
    assert (record["channel"], record["topic"], record["state"], record["source"]) == (
        "sms", "*", "opted_out", "sms_stop",
    )  # fmt: skip
    assert record["wording"] == text.strip()
    assert record["evidence"] == {"method": "sms_reply", "keyword": keyword, "message_id": "in-1"}
    (reply,) = events(engine, "sms_replied")
    assert reply.properties == {"text": text.strip(), "keyword": keyword}
    (unsubscribed,) = events(engine, "unsubscribed")
    assert unsubscribed.properties["source"] == "sms_stop"
    assert unsubscribed.event_key == f"unsubscribed:{record['id']}"
    # Consent only: the number is not put on the suppression list.
    assert not is_suppressed_phone(engine, ANA_PHONE)


def test_a_repeated_callback_or_a_second_stop_records_no_second_opt_out(engine: Engine) -> None:
    ana = add_contact(engine, "ana", ANA_PHONE)
    assert inbound(engine, ANA_PHONE, "STOP", message_id="in-1") == "STOP"
    with engine.begin() as conn:  # the provider calls again with the same message
        again = record_inbound_sms(conn, ANA_PHONE, "STOP", T0, message_id="in-1")
    assert (again.recorded, again.keyword, again.opted_out) == (0, "STOP", 0)
    assert len(events(engine, "sms_replied")) == 1
    with engine.begin() as conn:  # a new STOP while already opted out: the reply only
        later = record_inbound_sms(conn, ANA_PHONE, "Stop!", T0 + timedelta(hours=1))
    assert (later.recorded, later.opted_out) == (1, 0)
    assert len(events(engine, "sms_replied")) == 2
    assert [h["state"] for h in history(engine, ana)] == ["opted_out"]
    assert len(events(engine, "unsubscribed")) == 1


def test_free_text_is_only_recorded_as_a_reply(engine: Engine) -> None:
    ana = add_contact(engine, "ana", ANA_PHONE)
    text = "Please stop texting me " + "x" * 300
    assert inbound(engine, ANA_PHONE, text) is None
    (reply,) = events(engine, "sms_replied")
    assert reply.contact_id == ana and reply.properties == {"text": text[:160]}
    assert history(engine, ana) == [] and events(engine, "unsubscribed") == []


def test_the_number_is_matched_in_its_compact_form_for_every_contact_that_has_it(
    engine: Engine,
) -> None:
    ana = add_contact(engine, "ana", "+33 6 12 34 56 78")
    shared = add_contact(engine, "ana-pro", ANA_PHONE)
    other = add_contact(engine, "bob", "+33700000002")
    with engine.begin() as conn:
        result = record_inbound_sms(conn, "+33 6.12.34.56.78", "STOP", T0)
    assert (result.recorded, result.opted_out) == (2, 2)
    assert sorted(e.contact_id for e in events(engine, "sms_replied")) == [ana, shared]
    with engine.connect() as conn:
        opted = conn.execute(select(ConsentRecord.contact_id).order_by(ConsentRecord.contact_id))
        assert list(opted.scalars()) == [ana, shared]
    assert history(engine, other) == []


def test_an_unknown_number_is_recorded_nowhere_and_not_logged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    add_contact(engine, "ana", ANA_PHONE)
    caplog.set_level(logging.INFO, logger="engine.insights.reports")
    assert inbound(engine, "+33799999999", "STOP") is None
    assert inbound(engine, "not a number", "STOP") is None
    assert events(engine) == []
    with engine.connect() as conn:
        assert conn.execute(select(ConsentRecord.id)).first() is None
    assert "ignored" in caplog.text
    assert "99999999" not in caplog.text and "not a number" not in caplog.text


def test_the_stop_is_the_current_state_the_gate_reads(engine: Engine) -> None:
    ana = add_contact(engine, "ana", ANA_PHONE)
    add_send(engine, ana, "s-ana", "msg-1")
    assert inbound(engine, ANA_PHONE, "ARRÊT") == "ARRET"
    with engine.connect() as conn:
        assert consent_snapshot(conn, [ana])[ana][("sms", "*")][0] == "opted_out"
