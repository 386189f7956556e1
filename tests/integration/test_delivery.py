"""Delivery end to end: journeys queue emails, the dispatcher hands them to a real SMTP server
(aiosmtpd on 127.0.0.1); transient refusals are retried, a hard bounce suppresses the address
and the next marketing send is blocked; a crash mid-delivery never sends twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.channel_config import lint_channels_text, load_channels
from engine.config import load_settings
from engine.delivery import Dispatcher, retry_delay, tracking_prepare
from engine.policy.loader import lint_policy_text
from engine.policy.loading import full_gate_factory
from engine.runner import Worker
from engine.runtime.clock import VirtualClock
from engine.store.db import make_engine
from engine.store.models import Event, JournalEntry, Send, Suppression
from engine.versions import publish_dir
from tests.smtp import Smtp, smtp_server

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # a Tuesday morning, outside quiet hours
SCENARIO = """\
format_version: 1
id: promo
name: Spring promo
objective: other
topic: promotions
sender:
  from_name: Spring team
  reply_to: care@shop.example
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
      text: "Hello {{ contact.first_name }}, our spring offers are here."
"""
POLICY = """\
format_version: 1
topics:
  promotions: Promotions
consent:
  defaults:
    email: opt_out
"""


@pytest.fixture
def smtp() -> Iterator[tuple[Smtp, int]]:
    with smtp_server() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path, smtp: tuple[Smtp, int]) -> Path:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "promo.yaml").write_text(SCENARIO)
    (folder / "policy.yaml").write_text(POLICY)
    (folder / "channels.yaml").write_text(
        "email:\n"
        "  provider: smtp\n"
        "  host: 127.0.0.1\n"
        f"  port: {smtp[1]}\n"
        "  security: none\n"
        "  from_address: news@shop.example\n"
        "  from_name: La Boutique\n"
    )
    return folder


class World:
    def __init__(self, url: str, workspace: Path) -> None:
        self.engine = make_engine(url)
        self.settings = load_settings(
            {}, database_url=url, scenarios_dir=workspace, secret_key="s" * 32,
            public_url="https://shop.example",
        )  # fmt: skip
        with Session(self.engine) as db, db.begin():
            publish_dir(db, workspace)
        channels = load_channels(workspace)
        prepare = tracking_prepare(self.settings, VirtualClock(T0))
        self.dispatcher = Dispatcher(self.engine, channels, prepare=prepare)
        self.worker = Worker(
            self.engine, self.settings, clock=VirtualClock(T0),
            gate_factory=full_gate_factory(self.settings), delivering=channels,
        )  # fmt: skip

    def visit(self, contacts: list[str], now: datetime) -> None:
        from engine.ingest import clean_event, record_events, upsert_contacts

        with self.engine.begin() as conn:
            upsert_contacts(
                conn,
                [{"external_id": c, "email": f"{c}@example.org", "attributes": {"first_name": c},
                  "timezone": "Europe/Paris", "tags": [], "score": 0, "opted_out": False,
                  "locale": None, "phone": None} for c in contacts],
                now,
            )  # fmt: skip
            events = [clean_event({"contact": c, "name": "visited"}, now) for c in contacts]
            record_events(conn, events, now)
        self.worker.run_once(now)

    def sends(self) -> list[Any]:
        with Session(self.engine) as db:
            return list(db.execute(select(Send).order_by(Send.id)).scalars())


@pytest.fixture
def world(engine_url: str, workspace: Path) -> Iterator[World]:
    made = World(engine_url, workspace)
    yield made
    made.dispatcher.close()
    made.engine.dispose()


def test_queued_emails_reach_the_smtp_server(world: World, smtp: tuple[Smtp, int]) -> None:
    handler, _port = smtp
    world.visit(["anne", "bruno"], T0)
    assert [s.status for s in world.sends()] == ["queued", "queued"]
    report = world.dispatcher.run_once(T0 + timedelta(seconds=5))
    assert (report.claimed, report.sent) == (2, 2)
    assert sorted(str(m["To"]) for m in handler.arrived) == [
        "anne@example.org",
        "bruno@example.org",
    ]
    first = handler.arrived[0]
    assert str(first["From"]) == "Spring team <news@shop.example>"  # the scenario's sender
    assert str(first["Reply-To"]) == "care@shop.example"
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(first["List-Unsubscribe"]).startswith("<https://shop.example/u/")
    text = first.get_body(("plain",)).get_content()
    assert "our spring offers are here" in text
    assert "https://shop.example/u/" in text  # the visible unsubscribe link in the footer
    sends = world.sends()
    assert {s.status for s in sends} == {"sent"}
    assert all(s.provider_id and s.provider_id.startswith("<") for s in sends)
    assert world.dispatcher.run_once(T0 + timedelta(seconds=6)).claimed == 0  # nothing twice


def test_a_transient_refusal_is_retried_after_a_backoff(
    world: World, smtp: tuple[Smtp, int]
) -> None:
    handler, _port = smtp
    handler.replies["anne@example.org"] = ["451 4.3.0 try later"]
    world.visit(["anne"], T0)
    first = world.dispatcher.run_once(T0)
    assert (first.retried, first.sent) == (1, 0)
    (send,) = world.sends()
    assert send.status == "queued" and send.attempts == 1 and "451" in (send.error or "")
    assert send.next_attempt_at == T0 + retry_delay(1, send.send_key)
    assert world.dispatcher.run_once(T0 + timedelta(seconds=30)).claimed == 0  # not due yet
    later = world.dispatcher.run_once(send.next_attempt_at)
    assert later.sent == 1
    (send,) = world.sends()
    assert (send.status, send.attempts) == ("sent", 2)
    assert len(handler.arrived) == 1


def test_a_hard_bounce_suppresses_the_address_and_blocks_the_next_send(
    world: World, smtp: tuple[Smtp, int]
) -> None:
    handler, _port = smtp
    handler.replies["anne@example.org"] = ["550 5.1.1 user unknown"]
    world.visit(["anne"], T0)
    report = world.dispatcher.run_once(T0)
    assert report.bounced == 1 and not handler.arrived
    with Session(world.engine) as db:
        suppressed = db.scalars(select(Suppression)).one()
        bounced = db.scalars(select(Event).where(Event.name == "email_bounced")).one()
    assert (suppressed.channel, suppressed.address, suppressed.reason) == (
        "email", "anne@example.org", "hard_bounce",
    )  # fmt: skip
    assert bounced.event_key == f"bounced:{world.sends()[0].send_key}"
    # The next marketing email to that address is stopped by the gate, with the reason.
    world.visit(["anne"], T0 + timedelta(days=2))
    with Session(world.engine) as db:
        reasons = db.scalars(
            select(JournalEntry.reason).where(JournalEntry.kind == "decision")
        ).all()
    assert reasons and all(r == "suppression:hard_bounce" for r in reasons)
    assert len(world.sends()) == 1


def test_a_crash_while_the_provider_has_the_message_never_sends_twice(
    world: World, smtp: tuple[Smtp, int]
) -> None:
    handler, _port = smtp
    world.visit(["anne"], T0)
    with world.engine.begin() as conn:  # a worker claims, then dies before recording
        claimed = world.dispatcher._claim(conn, T0)
    assert len(claimed) == 1
    assert world.dispatcher.run_once(T0 + timedelta(seconds=10)).claimed == 0  # still leased
    after = world.dispatcher.run_once(T0 + timedelta(minutes=16))
    assert after.claimed == 0
    (send,) = world.sends()
    assert send.status == "ambiguous"  # SMTP takes no idempotency key: not resent blindly
    assert not handler.arrived


def test_channels_file_is_linted_with_lines(tmp_path: Path) -> None:
    problems = lint_channels_text(
        "email:\n  provider: smpt\n  host: x\nfax:\n  provider: smtp\n", "channels.yaml"
    )
    found = {(p.code, p.line) for p in problems}
    assert ("channels.provider", 2) in found
    assert ("channels.unknown", 4) in found
    assert any("smtp" in (p.hint or "") for p in problems)
    assert lint_policy_text(POLICY, "policy.yaml")[0] is not None
