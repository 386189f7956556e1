"""Program caps and budgets, enforced by the real gate in the real worker over the database.

A program's caps count only its own scenarios' sends (`cap:program:<program>:<cap>`); its budget
stops its marketing sends once the period's spend would pass the amount (`budget:<program>`),
within one batch and across batches and racing workers; transactional sends always pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from selectors import EVENT_READ, DefaultSelector
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.audience.ingest import record_events, upsert_contacts
from engine.config import load_settings
from engine.policy.loader import lint_policy_text
from engine.policy.loading import full_gate_factory
from engine.policy.programs import ProgramWatcher, program_lock_key, program_spend
from engine.store.db import make_engine
from engine.store.models import JournalEntry, Send
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle
from tests import program_race

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday morning in Paris
GROWTH = """\
format_version: 1
id: growth
name: Growth
objective: basket
scenarios: [promo-a, promo-b]
caps:
  - {id: week, channels: [email], max: 1, window: 7d}
"""
THRIFT = """\
format_version: 1
id: thrift
name: Thrift
objective: other
scenarios: [spend, receipt]
budget: {amount: 0.003, period: month}   # email costs 0.001 a message: three sends a month
"""
SCENARIOS = [
    program_race.journey("promo-a", "a"),
    program_race.journey("promo-b", "b"),
    program_race.journey("other", "o"),
    program_race.journey("spend", "spend"),
    program_race.journey("receipt", "ordered", kind="transactional"),
]


@dataclass
class World:
    engine: Engine
    worker: Worker
    folder: Path

    def events(self, name: str, contacts: list[str], at: datetime) -> None:
        with self.engine.begin() as conn:
            record_events(conn, [
                {"contact": c, "name": name, "properties": {}, "occurred_at": at,
                 "event_key": None} for c in contacts
            ], at)  # fmt: skip
        self.worker.run_once(at)

    def sends(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Send.scenario_id, Send.kind).order_by(Send.id))
            return [(r.scenario_id, r.kind) for r in rows]

    def blocked(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(JournalEntry.scenario_id, JournalEntry.reason)
                .where(JournalEntry.kind == "decision")
                .order_by(JournalEntry.id)
            )
            return [(r.scenario_id, r.reason) for r in rows]


@pytest.fixture
def world(engine_url: str, tmp_path: Path) -> Iterator[World]:
    engine = make_engine(engine_url)
    folder = tmp_path / "programs"
    folder.mkdir()
    (folder / "growth.yaml").write_text(GROWTH)
    (folder / "thrift.yaml").write_text(THRIFT)
    with Session(engine) as session, session.begin():
        for text in SCENARIOS:
            publish_bundle(session, {"yaml": text, "templates": {}}, now=T0)
    with engine.begin() as conn:
        upsert_contacts(conn, [{"external_id": f"c{i}", "email": f"c{i}@example.com",
                                "attributes": {}} for i in range(6)], T0)  # fmt: skip
    policy, problems = lint_policy_text(program_race.POLICY)
    assert policy is not None, problems
    settings = load_settings(env={}).evolve(timezone="Europe/Paris", scenarios_dir=tmp_path)
    worker = Worker(engine, settings, gate_factory=full_gate_factory(settings, policy))
    yield World(engine, worker, folder)
    engine.dispose()


def test_a_program_cap_counts_only_the_programs_own_sends(world: World) -> None:
    world.events("a", ["c0"], T0)
    world.events("b", ["c0"], T0 + timedelta(hours=1))  # same program, same week: blocked
    world.events("o", ["c0"], T0 + timedelta(hours=2))  # outside the program: not judged
    assert world.sends() == [("promo-a", "marketing"), ("other", "marketing")]
    assert world.blocked() == [("promo-b", "cap:program:growth:week")]
    # The outside send does not use up the program's slot: a week later promo-b goes out.
    world.events("b", ["c0"], T0 + timedelta(days=7, hours=1))
    assert world.sends()[-1] == ("promo-b", "marketing")


def test_another_scenarios_sends_never_fill_a_program_cap(world: World) -> None:
    world.events("o", ["c1"], T0)
    world.events("a", ["c1"], T0 + timedelta(hours=1))
    assert world.sends() == [("other", "marketing"), ("promo-a", "marketing")]
    assert world.blocked() == []


def test_the_budget_stops_a_batch_at_the_amount_and_later_batches_too(world: World) -> None:
    everyone = [f"c{i}" for i in range(5)]
    world.events("spend", everyone, T0)  # one batch of five: the third send spends it all
    assert world.sends() == [("spend", "marketing")] * 3
    assert world.blocked() == [("spend", "budget:thrift")] * 2
    world.events("spend", ["c5"], T0 + timedelta(days=1))  # a later batch reads the ledger
    assert world.blocked()[-1] == ("spend", "budget:thrift")
    world.events("ordered", ["c0"], T0 + timedelta(days=2))  # transactional: always passes
    assert world.sends()[-1] == ("receipt", "transactional")
    world.events("spend", ["c5"], datetime(2026, 4, 1, 8, tzinfo=UTC))  # April, a new budget
    assert world.sends()[-1] == ("spend", "marketing")


def test_the_spend_of_closed_hours_is_read_once_and_the_last_hours_every_batch(
    world: World,
) -> None:
    world.events("spend", ["c0", "c1"], T0)  # 0.002 spent at 09:00
    thrift = ProgramWatcher(world.folder.parent).current().by_scenario["spend"]
    closed: dict[str, Any] = {}
    later = T0 + timedelta(hours=3)
    with world.engine.connect() as conn:
        first = program_spend(conn, [thrift], later, "Europe/Paris", closed)
        assert first == {"thrift": pytest.approx(0.002)}
        assert closed["thrift"][1] == T0 + timedelta(hours=2)  # counted up to the last full hour
    _ledger_row(world.engine, "spend", T0 + timedelta(minutes=30))  # late, in a counted hour
    _ledger_row(world.engine, "spend", later - timedelta(minutes=5))  # in the last hours
    with world.engine.connect() as conn:
        cached = program_spend(conn, [thrift], later, "Europe/Paris", closed)
        fresh = program_spend(conn, [thrift], later, "Europe/Paris", {})
    assert cached == {"thrift": pytest.approx(0.003)}  # the counted hours were not read again
    assert fresh == {"thrift": pytest.approx(0.004)}  # a new count sees both


def _ledger_row(engine: Engine, scenario: str, at: datetime) -> None:
    with engine.begin() as conn:
        contact = conn.execute(select(func.min(Send.contact_id))).scalar_one()
        conn.execute(Send.__table__.insert().values(
            send_key=f"test:{at.isoformat()}", contact_id=contact, scenario_id=scenario,
            step_id="mail", channel="email", kind="marketing", status="sent", payload={},
            attempts=1, created_at=at,
        ))  # fmt: skip


def test_transactional_sends_count_in_the_spend(world: World) -> None:
    world.events("ordered", ["c0", "c1"], T0)
    world.events("spend", ["c2", "c3"], T0 + timedelta(hours=1))
    assert world.sends() == [("receipt", "transactional")] * 2 + [("spend", "marketing")]
    assert world.blocked() == [("spend", "budget:thrift")]


def test_edited_program_files_are_read_again_by_the_running_worker(world: World) -> None:
    world.events("a", ["c0"], T0)
    (world.folder / "growth.yaml").write_text(GROWTH.replace("max: 1", "max: 2"))
    world.events("b", ["c0"], T0 + timedelta(hours=1))
    assert world.sends() == [("promo-a", "marketing"), ("promo-b", "marketing")]
    (world.folder / "growth.yaml").unlink()
    world.events("b", ["c0"], T0 + timedelta(hours=2))
    assert world.sends()[-1] == ("promo-b", "marketing")  # no program: no program cap


def test_the_watcher_reads_the_folder_only_when_it_changes(tmp_path: Path) -> None:
    folder = tmp_path / "programs"
    folder.mkdir()
    (folder / "growth.yaml").write_text(GROWTH)
    watcher = ProgramWatcher(tmp_path)
    first = watcher.current()
    assert watcher.current() is first  # unchanged: the same rules, nothing linted again
    assert first.by_scenario["promo-a"].id == "growth"
    (folder / "thrift.yaml").write_text(THRIFT.replace("objective: other", "objective: nope"))
    second = watcher.current()  # a broken file is left out, the others stay enforced
    assert second is not first and set(second.by_scenario) == {"promo-a", "promo-b"}


def test_program_lock_keys_are_stable_signed_32_bit() -> None:
    keys = {program_lock_key(f"p{i}") for i in range(1000)}
    assert all(-(2**31) <= k < 2**31 for k in keys) and len(keys) == 1000
    assert program_lock_key("thrift") == program_lock_key("thrift")


# ---------------------------------------------------------------- racing workers


def _start(args: list[str], log: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.program_race", *args],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            text=True, bufsize=1,
        )  # fmt: skip


def _ask(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _answer(proc: subprocess.Popen[str], log: Path) -> Any:
    assert proc.stdout is not None
    with DefaultSelector() as selector:  # a process stuck on a lock fails the test
        selector.register(proc.stdout, EVENT_READ)
        ready = selector.select(timeout=120)
    line = proc.stdout.readline() if ready else ""
    assert line, f"{log.stem} gave no answer:\n{log.read_text()}"
    return line


ROUNDS = {"postgresql": 12, "sqlite": 4}


@pytest.mark.slow  # starts two processes
def test_racing_workers_never_overshoot_a_budget(engine_url: str, tmp_path: Path) -> None:
    """Each round (a new day, so a new daily budget of five emails), twenty contacts are due and
    each worker claims ten: the program lock must let the two batches spend five in all, not
    five each."""
    program_race.prepare(engine_url, tmp_path, T0)
    engine = make_engine(engine_url)
    rounds = ROUNDS[engine.dialect.name]
    logs = [tmp_path / f"w{i}.log" for i in (1, 2)]
    procs = [_start(["worker", engine_url, str(tmp_path), f"w{i}"], log)
             for i, log in zip((1, 2), logs, strict=True)]  # fmt: skip
    contested = 0
    try:
        for proc, log in zip(procs, logs, strict=True):  # imports and connections first
            _ask(proc, (T0 - timedelta(hours=1)).isoformat())
            _answer(proc, log)
        for n in range(rounds):
            now = T0 + timedelta(days=n)
            program_race.due(engine, now)
            for proc in procs:
                _ask(proc, now.isoformat())
            answers = [_answer(proc, log) for proc, log in zip(procs, logs, strict=True)]
            contested += all('"claimed": 0' not in a for a in answers)
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=60)
            assert proc.stdout is not None
            proc.stdout.close()
    with engine.connect() as conn:
        rows = conn.execute(select(Send.created_at, func.count()).group_by(Send.created_at))
        per_day = {at.isoformat(): n for at, n in rows}  # each round sends at one instant
    engine.dispose()
    assert sorted(per_day.values()) == [program_race.DAILY] * rounds, per_day
    if engine.dialect.name == "postgresql":
        assert contested >= rounds // 2, f"both workers had a batch in {contested}/{rounds}"
