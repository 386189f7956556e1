"""Public holidays per contact and blackout dates, enforced by the real gate in the real worker
over the database: the rule journaled, the send deferred to the day after, then sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.audience.ingest import record_events, upsert_contacts
from engine.config import load_settings
from engine.policy.loader import lint_policy_text
from engine.policy.loading import full_gate_factory
from engine.store.db import make_engine
from engine.store.models import Contact, JournalEntry, Send
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle
from tests import program_race

POLICY = """\
format_version: 1
topics: {promotions: Promotions}
consent: {defaults: {email: opt_out}}
country: FR
quiet_hours:
  - {id: public-holidays, channels: [email], holidays: contact}
blackout:
  - {id: year-end, dates: ["2026-12-24"], channels: [marketing], reason: end-of-year freeze}
outcome: {action: skip, defer_max: 4d}
pressure: {under_extra: 0, over_factor: 1}
"""
UNITY_DAY = datetime(2026, 10, 3, 8, 0, tzinfo=UTC)  # 10:00 in Berlin and Paris
CHRISTMAS_EVE = datetime(2026, 12, 24, 9, 0, tzinfo=UTC)


@dataclass
class World:
    engine: Engine
    worker: Worker

    def visit(self, contacts: list[str], at: datetime) -> None:
        with self.engine.begin() as conn:
            record_events(conn, [
                {"contact": c, "name": "a", "properties": {}, "occurred_at": at,
                 "event_key": None} for c in contacts
            ], at)  # fmt: skip
        self.worker.run_once(at)

    def sent_to(self) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Contact.external_id).join(Send, Send.contact_id == Contact.id)
                .order_by(Send.id)
            )  # fmt: skip
            return [r.external_id for r in rows]

    def decisions(self) -> list[tuple[str, str | None, str | None]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Contact.external_id, JournalEntry.reason, JournalEntry.data)
                .join(Contact, Contact.id == JournalEntry.contact_id)
                .where(JournalEntry.kind == "decision").order_by(JournalEntry.id)
            )  # fmt: skip
            return [(r.external_id, r.reason, (r.data or {}).get("action")) for r in rows]


@pytest.fixture
def world(engine_url: str, tmp_path: Path) -> Iterator[World]:
    engine = make_engine(engine_url)
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": program_race.journey("promo", "a"), "templates": {}},
                       now=UNITY_DAY)  # fmt: skip
    people = [("berlin", "DE", "Europe/Berlin"), ("paris", "FR", "Europe/Paris"),
              ("nowhere", None, "Europe/Paris")]  # fmt: skip
    with engine.begin() as conn:
        upsert_contacts(conn, [
            {"external_id": name, "email": f"{name}@example.com", "timezone": zone,
             "attributes": {"country": country} if country else {}}
            for name, country, zone in people
        ], UNITY_DAY)  # fmt: skip
    policy, problems = lint_policy_text(POLICY)
    assert policy is not None, problems
    settings = load_settings(env={}).evolve(timezone="Europe/Paris", scenarios_dir=tmp_path)
    yield World(engine, Worker(engine, settings, gate_factory=full_gate_factory(settings, policy)))
    engine.dispose()


def test_german_unity_day_holds_the_german_contact_only(world: World) -> None:
    world.visit(["berlin", "paris", "nowhere"], UNITY_DAY)
    assert sorted(world.sent_to()) == ["nowhere", "paris"]
    assert world.decisions() == [("berlin", "quiet:public-holidays", "defer")]
    world.worker.run_once(datetime(2026, 10, 3, 21, 59, tzinfo=UTC))  # 23:59 in Berlin
    assert len(world.sent_to()) == 2
    world.worker.run_once(datetime(2026, 10, 3, 22, 1, tzinfo=UTC))
    assert world.sent_to()[-1] == "berlin"


def test_a_contact_without_a_country_keeps_the_workspace_holidays(world: World) -> None:
    bastille_day = datetime(2026, 7, 14, 8, 0, tzinfo=UTC)
    world.visit(["berlin", "paris", "nowhere"], bastille_day)
    assert world.sent_to() == ["berlin"]
    assert sorted((w, r) for w, r, _ in world.decisions()) == [
        ("nowhere", "quiet:public-holidays"), ("paris", "quiet:public-holidays"),
    ]  # fmt: skip


def test_a_blackout_defers_every_contact_with_its_rule(world: World) -> None:
    world.visit(["berlin", "paris"], CHRISTMAS_EVE)
    assert world.sent_to() == []
    assert {(w, r) for w, r, _ in world.decisions()} == {
        ("berlin", "blackout:year-end"), ("paris", "blackout:year-end"),
    }  # fmt: skip
    # Christmas Day is a public holiday in both countries: the quiet rule holds them a day more
    world.worker.run_once(datetime(2026, 12, 24, 23, 1, tzinfo=UTC))
    assert world.sent_to() == []
    assert world.decisions()[-1][1] == "quiet:public-holidays"
    world.worker.run_once(datetime(2026, 12, 25, 23, 1, tzinfo=UTC))
    assert world.sent_to() == ["paris"]  # the 26th is a public holiday in Germany only
    world.worker.run_once(datetime(2026, 12, 26, 23, 1, tzinfo=UTC))
    assert world.sent_to() == ["paris", "berlin"]


def test_contact_show_lists_the_quiet_days_ahead(
    world: World, engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from designer.cli import cli

    soon = datetime.now(UTC).date() + timedelta(days=2)
    text = POLICY.replace('dates: ["2026-12-24"]', f'dates: ["{soon.isoformat()}"]')
    (tmp_path / "policy.yaml").write_text(text, encoding="utf-8")
    for key, value in {"SCENARIOS_DIR": tmp_path, "DATA_DIR": tmp_path / "data",
                       "DATABASE_URL": engine_url}.items():  # fmt: skip
        monkeypatch.setenv(f"PARCOURS_{key}", str(value))
    shown = CliRunner().invoke(cli, ["contact", "show", "berlin"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "quiet days in the next 30 days (calendar DE: the contact's country)" in shown.output
    assert f"{soon}  blackout:year-end" in shown.output
    assert "end-of-year freeze" in shown.output
    other = CliRunner().invoke(cli, ["contact", "show", "nowhere", "--json"])
    quiet = json.loads(other.output)["quiet_days"]
    assert (quiet["calendar"], quiet["from_contact"]) == ("FR", False)
    assert {"date": str(soon), "rule": "blackout:year-end", "channels": ["marketing"],
            "why": "end-of-year freeze"} in quiet["days"]  # fmt: skip
