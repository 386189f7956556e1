"""Delivery end to end: journeys queue emails, the dispatcher hands them to a real SMTP server
(aiosmtpd on 127.0.0.1); transient refusals are retried, a hard bounce suppresses the address
and the next marketing send is blocked; a crash mid-delivery never sends twice and strands only
the message in flight (a delivery process killed while a webhook receiver holds its request)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from channels import Channel, OutboundMessage, Receipt
from engine.config import load_settings
from engine.delivery.channel_config import lint_channels_text, load_channels
from engine.delivery.loop import Dispatcher, retry_delay, tracking_prepare, workspace_dispatcher
from engine.policy.loader import lint_policy_text, load_policy_file
from engine.policy.loading import full_gate_factory
from engine.runtime.clock import VirtualClock
from engine.store.db import make_engine
from engine.store.models import Event, JournalEntry, Send, Suppression
from engine.worker.runner import Worker
from engine.worker.versions import publish_dir
from tests.delivery_crash import (
    counting_receiver,
    environment,
    queue_sends,
    start_worker,
    statuses,
    write_workspace,
)
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
        policy = load_policy_file(workspace / "policy.yaml")
        self.dispatcher = Dispatcher(self.engine, channels, prepare=prepare, policy=policy)
        self.worker = Worker(
            self.engine, self.settings, clock=VirtualClock(T0),
            gate_factory=full_gate_factory(self.settings), delivering=channels,
        )  # fmt: skip

    def visit(self, contacts: list[str], now: datetime) -> None:
        from engine.audience.ingest import clean_event, record_events, upsert_contacts

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
    dead = Dispatcher(
        world.engine,
        world.dispatcher.channels,
        lease=timedelta(seconds=30),
        policy=world.dispatcher.policy,
    )
    with world.engine.begin() as conn:  # a worker claims, hands the message over, then dies
        (claimed,) = dead._claim(conn, T0)
    assert dead._hand_over(claimed, T0)
    assert world.dispatcher.run_once(T0 + timedelta(seconds=10)).claimed == 0  # still leased
    after = world.dispatcher.run_once(T0 + timedelta(seconds=31))
    assert after.claimed == 0
    (send,) = world.sends()
    assert send.status == "ambiguous"  # SMTP takes no idempotency key: not resent blindly
    assert send.attempts == 1
    assert not handler.arrived


def test_a_claim_whose_worker_died_before_the_provider_call_is_delivered_after_the_lease(
    world: World, smtp: tuple[Smtp, int]
) -> None:
    handler, _port = smtp
    world.visit(["anne", "bruno"], T0)
    dead = Dispatcher(
        world.engine,
        world.dispatcher.channels,
        lease=timedelta(seconds=30),
        policy=world.dispatcher.policy,
    )
    with world.engine.begin() as conn:  # a worker claims both, then dies before any hand-over
        assert len(dead._claim(conn, T0)) == 2
    assert {s.status for s in world.sends()} == {"queued"}  # claimed is not in flight
    assert world.dispatcher.run_once(T0 + timedelta(seconds=10)).claimed == 0  # still leased
    after = world.dispatcher.run_once(T0 + timedelta(seconds=31))
    assert (after.claimed, after.sent, after.ambiguous) == (2, 2, 0)
    assert [(s.status, s.attempts) for s in world.sends()] == [("sent", 1), ("sent", 1)]
    assert len(handler.arrived) == 2


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    made = make_engine(engine_url)
    yield made
    made.dispose()


def test_the_heartbeat_keeps_a_live_claim_past_its_lease(
    engine: Engine, engine_url: str, tmp_path: Path
) -> None:
    """A provider call longer than the lease: the heartbeat renews the claim, so another worker
    neither takes the message back nor marks it ambiguous."""
    with counting_receiver() as receiver:
        env = environment(engine_url, write_workspace(tmp_path / "ws", receiver.url,
                                                      idempotent=False), lease_seconds=1)  # fmt: skip
        queue_sends(engine, env, 1, T0)
        channels = load_channels(Path(env["PARCOURS_SCENARIOS_DIR"]))
        other = Dispatcher(engine, channels, lease=timedelta(seconds=1))
        seen: list[Any] = []
        leases: list[tuple[Any, Any]] = []

        class Slow(Channel):
            info = channels["webhook"].info

            def send(self, message: OutboundMessage) -> Receipt:
                if not seen:
                    leased = select(Send.lease_until).where(Send.send_key == message.send_key)
                    first = lease = _read(engine, leased)
                    for _ in range(200):  # until the heartbeat has renewed the lease
                        threading.Event().wait(0.05)
                        lease = _read(engine, leased)
                        if lease > first:
                            break
                    seen.append(other.run_once(first + timedelta(milliseconds=1)))
                    leases.append((first, lease))
                return Receipt(provider_id=f"slow:{message.send_key}")

        live = Dispatcher(engine, {"webhook": Slow()}, lease=timedelta(seconds=1))
        report = live.run_once(T0)
    ((first, renewed),) = leases
    assert renewed > first, "the heartbeat renewed the lease"
    assert (report.sent, seen[0].claimed, seen[0].ambiguous) == (2, 0, 0)
    assert set(statuses(engine)) == {"sent"}
    assert receiver.requests == 0, "the other worker sent nothing"


def _read(engine: Engine, query: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


@pytest.mark.slow
@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_a_killed_delivery_loop_strands_only_the_message_in_flight(
    engine: Engine, engine_url: str, tmp_path: Path, idempotent: bool
) -> None:
    """50 webhook sends; the delivery process is killed while the receiver holds its third
    request. After the short lease, the next loop delivers every other message exactly once;
    the one in flight is ambiguous, or sent again with the same Idempotency-Key."""
    with counting_receiver(hold_from=3) as receiver:
        workspace = write_workspace(tmp_path / "ws", receiver.url, idempotent=idempotent)
        env = environment(engine_url, workspace, lease_seconds=2)
        total = queue_sends(engine, env, 25, T0)
        assert total == 50
        child = start_worker(env)
        held = receiver.held.wait(60)
        child.kill()
        _out, err = child.communicate(timeout=30)
        assert held and child.returncode == -signal.SIGKILL, err.decode()
        reached_before = dict(receiver.counts)
        assert sum(reached_before.values()) == 3
        receiver.release()
        held_key = next(k for k in reached_before if k not in statuses(engine).get("sent", []))
        dispatcher = workspace_dispatcher(engine, load_settings(env))
        assert dispatcher is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until nothing is queued or in flight
            by_status = statuses(engine)
            if not by_status.get("queued") and not by_status.get("sending"):
                break
            if not dispatcher.run_once():
                threading.Event().wait(0.2)  # the dead process's lease has not run out yet
        dispatcher.close()
        counts = dict(receiver.counts)
    by_status = statuses(engine)
    summary = {status: len(keys) for status, keys in by_status.items()}
    if idempotent:
        assert summary == {"sent": 50}, "re-queued, not ambiguous; nothing lost"
        assert counts[held_key] == 2, "the message in flight was sent again, with the same key"
    else:
        assert summary == {"sent": 49, "ambiguous": 1}, "only the message in flight is ambiguous"
        assert by_status["ambiguous"] == [held_key] and counts[held_key] == 1
    assert set(counts) == set(by_status["sent"]) | {held_key}, "every message arrived"
    assert all(n == 1 for key, n in counts.items() if key != held_key), "none arrived twice"


def test_channels_file_is_linted_with_lines(tmp_path: Path) -> None:
    problems = lint_channels_text(
        "email:\n  provider: smpt\n  host: x\nfax:\n  provider: smtp\n", "channels.yaml"
    )
    found = {(p.code, p.line) for p in problems}
    assert ("channels.provider", 2) in found
    assert ("channels.unknown", 4) in found
    assert any("smtp" in (p.hint or "") for p in problems)
    assert lint_policy_text(POLICY, "policy.yaml")[0] is not None
