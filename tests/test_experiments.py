"""Experiments on the real worker, SQLite and PostgreSQL: arms counted from the journal, a
declared winner routing new entries (the holdout kept, contacts inside keeping their arm,
audited), bandit shares reaching the split, and the automatic winner of a sequential test."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.audience.ingest import clean_contact, clean_event, record_events, upsert_contacts
from engine.config import load_settings
from engine.insights.experiments import (
    WinnerRefused,
    arm_results,
    current_scenario,
    declare_winner,
    reports,
)
from engine.insights.simulate import simulate
from engine.runtime.arms import split_arm
from engine.runtime.clock import VirtualClock
from engine.spec import model
from engine.spec.loader import load_scenario_text
from engine.store.db import make_engine
from engine.store.models import AuditEntry, Enrollment, ScenarioVersion
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SCENARIO = """\
format_version: 1
id: promo_test
name: Promo test
objective: activation
triggers:
  - event: signed_up
goal:
  event: order_placed
  within: 7d
steps:
  test:
    type: split
    holdout: 10{experiment}
    branches:
      - name: a
        weight: 50
        next: mail-a
      - name: b
        weight: 50
        next: mail-b
  mail-a:
    type: send
    channel: email
    content: {{subject: A, text: A}}
  mail-b:
    type: send
    channel: email
    content: {{subject: B, text: B}}
"""


def scenario_text(experiment: str = "") -> str:
    return SCENARIO.format(experiment=f"\n    experiment:\n{experiment}" if experiment else "")


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    made = make_engine(engine_url)
    yield made
    made.dispose()


def people(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {"external_id": f"c{i:04d}", "email": f"c{i}@example.com"}
        for i in range(first, first + count)
    ]


def converts(arm: str, index: int) -> bool:
    """The known truth: b converts one in four, a one in ten, the holdout one in twenty."""
    return index % {"a": 10, "b": 4, "holdout": 20}[arm] == 0


def arm_of(compiled: model.Scenario, external_id: str) -> str:
    step = compiled.steps["test"]
    assert isinstance(step, model.SplitStep)
    return split_arm(compiled.id, step, external_id)


def events_for(
    compiled: model.Scenario, contacts: list[dict[str, Any]], start: datetime
) -> list[dict[str, Any]]:
    out = []
    for c in contacts:
        who = c["external_id"]
        out.append({"contact": who, "name": "signed_up", "occurred_at": start.isoformat()})
        index = int(who[1:])
        if converts(arm_of(compiled, who), index):
            at = start + timedelta(days=1)
            out.append(
                {
                    "contact": who,
                    "name": "order_placed",
                    "occurred_at": at.isoformat(),
                    "properties": {"amount": 40 + index % 3},
                }
            )
    return out


def test_arm_results_count_entries_conversions_and_revenue(engine_url: str) -> None:
    text = scenario_text()
    compiled = load_scenario_text(text)
    contacts = people(0, 300)
    expected: dict[str, list[float]] = {}
    for c in contacts:
        index = int(c["external_id"][1:])
        arm = arm_of(compiled, c["external_id"])
        row = expected.setdefault(arm, [0, 0, 0.0])
        row[0] += 1
        if converts(arm, index):
            row[1] += 1
            row[2] += 40 + index % 3
    seen: dict[str, Any] = {}

    def inspect(sim_engine: Engine) -> None:
        with sim_engine.connect() as conn:
            seen["plain"] = arm_results(conn, "promo_test", "test")
            seen["money"] = arm_results(conn, "promo_test", "test", "amount")
            seen["reports"] = [r.to_dict() for r in reports(conn, compiled)]

    simulate([{"yaml": text, "templates": {}}], contacts, events_for(compiled, contacts, T0), T0, 2,
             database_url=engine_url, inspect=inspect)  # fmt: skip
    assert set(seen["money"]) == {"a", "b", "holdout"}
    for arm, (entered, converted, revenue) in expected.items():
        got = seen["money"][arm]
        assert (got.entered, got.converted, got.revenue) == (
            entered,
            converted,
            pytest.approx(revenue),
        )
        assert seen["plain"][arm].revenue == 0  # no value property named: no revenue
    report = seen["reports"][0]
    by_name = {a["name"]: a for a in report["arms"]}
    assert by_name["holdout"]["holdout"] is True
    assert by_name["b"]["rate"] == pytest.approx(expected["b"][1] / expected["b"][0])
    low, high = by_name["b"]["interval"]
    assert low < by_name["b"]["rate"] < high
    assert by_name["b"]["probability_best"] > 0.9
    assert report["uplift"]["absolute"] > 0


def publish(engine: Engine, text: str, now: datetime) -> None:
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": text, "templates": {}}, by="test", now=now)


def enter(engine: Engine, worker: Worker, contacts: list[dict[str, Any]], at: datetime) -> None:
    with engine.begin() as conn:
        upsert_contacts(conn, [clean_contact(c) for c in contacts], at)
        raw = [
            {"contact": c["external_id"], "name": "signed_up", "occurred_at": at.isoformat()}
            for c in contacts
        ]
        record_events(conn, [clean_event(e, at) for e in raw], at)
    worker.run_once(at)


def variants(engine: Engine, version_number: int) -> dict[str, str]:
    """Contact external id → arm, of the enrollments of one version."""
    from engine.store.models import Contact

    with engine.connect() as conn:
        rows = conn.execute(
            select(Contact.external_id, Enrollment.vars)
            .join(Enrollment, Enrollment.contact_id == Contact.id)
            .join(ScenarioVersion, ScenarioVersion.id == Enrollment.version_id)
            .where(ScenarioVersion.number == version_number)
        ).all()
    return {who: vars_["variant"] for who, vars_ in rows}


def test_declared_winner_routes_new_entries_and_keeps_the_holdout(engine: Engine) -> None:
    publish(engine, scenario_text(), T0)
    clock = VirtualClock(T0)
    worker = Worker(engine, load_settings(env={}), clock, worker_id="test")
    enter(engine, worker, people(0, 200), T0)
    before = variants(engine, 1)
    assert set(before.values()) == {"a", "b", "holdout"}

    later = T0 + timedelta(hours=1)
    with Session(engine) as session, session.begin():
        declared = declare_winner(session, "promo_test", "test", "b", "marie", later)
    assert declared.published.version_number == 2
    assert "winner: b" in declared.yaml
    with Session(engine) as session:
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "declare_winner")
        ).one()
        assert (audit.username, audit.target_id, audit.details["arm"]) == (
            "marie",
            "promo_test",
            "b",
        )
        assert current_scenario(session, "promo_test").steps["test"].experiment.winner == "b"  # type: ignore[attr-defined]

    enter(engine, worker, people(200, 400), later)
    after = variants(engine, 2)
    assert len(after) == 400
    assert set(after.values()) == {"b", "holdout"}  # every new entry outside the holdout takes b
    compiled = load_scenario_text(scenario_text())
    for who, arm in after.items():  # the holdout is the same people as without a winner
        assert (arm == "holdout") == (arm_of(compiled, who) == "holdout")
    assert variants(engine, 1) == before  # contacts already inside keep their arm


def test_declare_winner_refuses_what_is_not_a_branch(engine: Engine) -> None:
    publish(engine, scenario_text(), T0)
    with Session(engine) as session, session.begin():
        with pytest.raises(
            WinnerRefused, match="'c' is not a branch of 'test' \\(branches: a, b\\)"
        ):
            declare_winner(session, "promo_test", "test", "c", "marie", T0)
        with pytest.raises(WinnerRefused, match="'mail-a' is not a split step"):
            declare_winner(session, "promo_test", "mail-a", "a", "marie", T0)


def test_bandit_shifts_new_entries_to_the_better_branch(engine: Engine) -> None:
    """Round one splits evenly; a converts 30%, b 5%; the next look gives a about 90% of the
    round-two entries outside the holdout, b keeps its floor, the holdout its 10%."""
    publish(engine, scenario_text("      bandit: {floor: 0.1}\n"), T0)
    compiled = load_scenario_text(scenario_text())
    clock = VirtualClock(T0)
    worker = Worker(engine, load_settings(env={}), clock, worker_id="test")
    enter(engine, worker, people(0, 400), T0)
    first = Counter(variants(engine, 1).values())
    assert 0.4 < first["a"] / (first["a"] + first["b"]) < 0.6
    bought = []
    for n, (who, arm) in enumerate(sorted(variants(engine, 1).items())):
        if (arm == "a" and n % 10 < 3) or (arm == "b" and n % 20 == 0):
            bought.append(
                {
                    "contact": who,
                    "name": "order_placed",
                    "occurred_at": (T0 + timedelta(minutes=2)).isoformat(),
                }
            )
    with engine.begin() as conn:
        record_events(conn, [clean_event(e, T0) for e in bought], T0 + timedelta(minutes=2))
    worker.run_once(T0 + timedelta(minutes=3))
    round_two = T0 + timedelta(minutes=10)  # past the next look (every 5 minutes)
    enter(engine, worker, people(400, 1000), round_two)
    shares = worker.experiments.shares_of("promo_test")["test"]
    assert shares["a"] > 0.85 and shares["b"] >= 0.1
    second = Counter(arm for who, arm in variants(engine, 1).items() if int(who[1:]) >= 400)
    treated = second["a"] + second["b"]
    assert 0.85 < second["a"] / treated < 0.95
    assert second["b"] / treated > 0.06  # the floor: b still gets its share
    assert 0.06 < second["holdout"] / 1000 < 0.14  # the holdout share stays fixed
    for who, arm in variants(engine, 1).items():  # and holds the same people
        assert (arm == "holdout") == (arm_of(compiled, who) == "holdout")


def test_sequential_auto_winner_is_declared_by_the_worker(engine: Engine) -> None:
    """b converts far better: at its next look the worker's sequential rule stops, and the
    worker publishes the winner (audited as the rule's); the entries after it all take b."""
    publish(engine, scenario_text("      mode: sequential\n      auto_winner: true\n"), T0)
    worker = Worker(engine, load_settings(env={}), VirtualClock(T0), worker_id="test")
    enter(engine, worker, people(0, 300), T0)
    bought = [
        {
            "contact": who,
            "name": "order_placed",
            "occurred_at": (T0 + timedelta(minutes=2)).isoformat(),
        }
        for n, (who, arm) in enumerate(sorted(variants(engine, 1).items()))
        if (arm == "b" and n % 2 == 0) or (arm == "a" and n % 25 == 0)
    ]
    with engine.begin() as conn:
        record_events(conn, [clean_event(e, T0) for e in bought], T0 + timedelta(minutes=2))
    worker.run_once(T0 + timedelta(minutes=3))
    with Session(engine) as session:
        assert current_scenario(session, "promo_test").steps["test"].experiment.winner is None  # type: ignore[attr-defined]
    enter(engine, worker, people(300, 100), T0 + timedelta(minutes=10))  # the look comes first
    with Session(engine) as session:
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "declare_winner")
        ).all()
        assert [(a.username, a.details["arm"]) for a in audit] == [("auto-winner", "b")]
        assert current_scenario(session, "promo_test").steps["test"].experiment.winner == "b"  # type: ignore[attr-defined]
    # the entries of that same pass already went to the new version
    assert set(variants(engine, 2).values()) <= {"b", "holdout"}
    assert len(variants(engine, 2)) == 100
