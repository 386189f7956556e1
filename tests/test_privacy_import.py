"""An erased address imported again later is never reached by marketing: the worker's gate
skips the send naming the suppression, and the designer's reachability says the same."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from designer.insights import reachability
from engine.audience import privacy
from engine.audience.ingest import clean_event, record_events, upsert_contacts
from engine.config import load_settings
from engine.policy import consent
from engine.policy.loader import load_policy_file
from engine.policy.loading import full_gate_factory
from engine.runtime.clock import VirtualClock
from engine.store.db import make_engine
from engine.store.models import Contact, JournalEntry, Send, Suppression
from engine.worker.runner import Worker
from engine.worker.versions import publish_dir

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # a Tuesday morning, outside quiet hours
SCENARIO = """\
format_version: 1
id: promo
name: Spring promo
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
      text: "Hello, our spring offers are here."
"""
POLICY = """\
format_version: 1
topics:
  promotions: Promotions
consent:
  defaults:
    email: opt_out
"""
EMAIL = "anne.martin@example.org"


class World:
    def __init__(self, url: str, workspace: Path) -> None:
        self.engine = make_engine(url)
        self.settings = load_settings(
            {}, database_url=url, scenarios_dir=workspace, secret_key="s" * 32,
            public_url="https://shop.example",
        )  # fmt: skip
        with Session(self.engine) as db, db.begin():
            publish_dir(db, workspace)
        self.worker = Worker(
            self.engine, self.settings, clock=VirtualClock(T0),
            gate_factory=full_gate_factory(self.settings),
        )  # fmt: skip

    def visit(self, external_id: str, email: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            upsert_contacts(
                conn,
                [{"external_id": external_id, "email": email, "attributes": {},
                  "timezone": "Europe/Paris", "tags": [], "score": 0, "opted_out": False,
                  "locale": None, "phone": None}],
                now,
            )  # fmt: skip
            record_events(
                conn, [clean_event({"contact": external_id, "name": "visited"}, now)], now
            )
        self.worker.run_once(now)

    def contact_id(self, external_id: str) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(select(Contact.id).where(Contact.external_id == external_id))
            return int(found.scalar_one())


@pytest.fixture
def world(engine_url: str, tmp_path: Path) -> Iterator[World]:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "promo.yaml").write_text(SCENARIO)
    (folder / "policy.yaml").write_text(POLICY)
    made = World(engine_url, folder)
    yield made
    made.engine.dispose()


def test_an_erased_address_imported_again_is_not_reachable(world: World) -> None:
    world.visit("anne", EMAIL, T0)
    anne = world.contact_id("anne")
    with world.engine.connect() as conn:
        assert conn.execute(select(Send.contact_id)).scalars().all() == [anne]
    with world.engine.begin() as conn:
        privacy.erase_contact(conn, anne, T0, "dpo", "request")
    # Months later a CRM import brings the same person back, under a new id, address in capitals
    later = T0 + timedelta(days=90)
    world.visit("anne-2027", EMAIL.upper().replace("ANNE", "Anne"), later)
    new_id = world.contact_id("anne-2027")
    with world.engine.connect() as conn:
        sends = conn.execute(select(Send.contact_id)).scalars().all()
        decisions = conn.execute(
            select(JournalEntry.reason).where(
                JournalEntry.kind == "decision", JournalEntry.contact_id == new_id
            )
        ).scalars().all()  # fmt: skip
        plain = conn.execute(select(Suppression.address)).scalars().all()
        row = conn.execute(select(Contact).where(Contact.id == new_id)).one()
        policy = load_policy_file(world.settings.scenarios_dir / "policy.yaml")
        reach = reachability(conn, row, policy, later)
        shown = consent.contact_suppressions(conn, row)
    assert new_id not in sends, "the gate let a marketing send reach an erased address"
    assert decisions == ["suppression:erasure"]
    assert all(EMAIL not in a.lower() for a in plain)
    (email_row,) = [r for r in reach["rows"] if r["channel"] == "email"]
    assert [c["rule"] for c in email_row["cells"]] == ["suppression:erasure"]
    assert reach["open"] == 0
    assert [(s["channel"], s["address"], s["reason"]) for s in shown] == [
        ("*", row.email, "erasure")
    ]


def test_a_stranger_stays_reachable_after_an_erasure(world: World) -> None:
    world.visit("anne", EMAIL, T0)
    anne = world.contact_id("anne")
    with world.engine.begin() as conn:
        privacy.erase_contact(conn, anne, T0, "dpo", None)
    world.visit("bob", "bob@example.org", T0 + timedelta(days=1))
    with world.engine.connect() as conn:
        sends = conn.execute(select(Send.contact_id)).scalars().all()
    assert world.contact_id("bob") in sends
