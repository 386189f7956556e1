"""Sends and bounces in the ledger, enough for a pressure health signal to count (shared by the
report and page tests of the health signals)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from engine.audience.ingest import upsert_contacts
from engine.store.models import Contact, Event, Send


def seed(engine: Engine, scenario: str, sends: int, bounces: int, at: datetime) -> None:
    """`sends` emails of `scenario` at `at`, the first `bounces` of them bounced (an
    `email_bounced` event naming its send), over ten contacts."""
    with engine.begin() as conn:
        upsert_contacts(conn, [{"external_id": f"h{i}", "email": f"h{i}@example.com",
                                "attributes": {}} for i in range(10)], at)  # fmt: skip
        ids = list(conn.execute(select(Contact.id).order_by(Contact.id)).scalars())
        keys = [f"{scenario}:{n}" for n in range(sends)]
        conn.execute(insert(Send), [
            {"send_key": k, "contact_id": ids[i % len(ids)], "scenario_id": scenario,
             "step_id": "mail", "channel": "email", "kind": "marketing", "status": "sent",
             "payload": {}, "attempts": 1, "created_at": at, "sent_at": at}
            for i, k in enumerate(keys)
        ])  # fmt: skip
        if bounces:
            conn.execute(insert(Event), [
                {"contact_id": ids[i % len(ids)], "name": "email_bounced",
                 "properties": {"channel": "email", "send_key": keys[i]},
                 "occurred_at": at, "received_at": at}
                for i in range(bounces)
            ])  # fmt: skip
