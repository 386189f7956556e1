"""Experiments from the database: each split step's arms counted in one query, judged, and the
"declare winner" action that publishes a version routing new entries to the winning branch.

Counts come from the journal: the split step's `step` record names the arm each enrollment took
(whatever version it ran), and a `converted` record is a conversion inside the goal window (the
interpreter and the late attribution only journal those). Revenue is the goal event's value
property, when the scenario names one. The statistics (scipy, statsmodels) are imported when a
report is made, not with this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, and_, case, cast, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import NotFound, ParcoursError
from engine.spec import model
from engine.spec.loader import load_bundle
from engine.spec.yamlio import dump_roundtrip, load_roundtrip
from engine.store.models import (
    AuditEntry,
    Event,
    ExperimentState,
    JournalEntry,
    ScenarioRecord,
    ScenarioVersion,
)
from engine.worker.versions import PublishResult, publish_bundle

if TYPE_CHECKING:
    from engine.insights.experiment_report import ExperimentReport
    from engine.insights.experiment_stats import ArmCounts


class WinnerRefused(ParcoursError):
    """The winner cannot be declared (not a split step, not one of its branches)."""


def split_steps(scenario: model.Scenario) -> list[model.SplitStep]:
    """The scenario's experiments: its split steps, in the file's order."""
    return [s for s in scenario.steps.values() if isinstance(s, model.SplitStep)]


def goal_value(scenario: model.Scenario) -> str | None:
    """The goal event's property holding the conversion's value (`goal.value`), if declared."""
    value = getattr(scenario.goal, "value", None)
    return value if isinstance(value, str) and value else None


def _amount(prop: str, dialect: str) -> ColumnElement[Any]:
    """The goal event's value when it is a JSON number; anything else counts as no value."""
    if dialect == "postgresql":
        number = func.jsonb_typeof(Event.properties.op("->")(prop)) == "number"
        return case((number, cast(Event.properties.op("->>")(prop), Float)))
    path = f'$."{prop}"'
    number = func.json_type(Event.properties, path).in_(("integer", "real"))
    return case((number, cast(func.json_extract(Event.properties, path), Float)))


def arm_results(
    conn: Connection | Session, scenario_id: str, step_id: str, value_property: str | None = None
) -> dict[str, ArmCounts]:
    """Entered, converted and revenue per arm of one split step: one GROUP BY over the journal."""
    from engine.insights.experiment_stats import ArmCounts

    dialect = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    entered = (
        select(JournalEntry.reason.label("arm"), JournalEntry.enrollment_id.label("eid"))
        .where(
            JournalEntry.scenario_id == scenario_id,
            JournalEntry.kind == "step",
            JournalEntry.step_id == step_id,
            JournalEntry.reason.is_not(None),
        )
        .distinct()
        .subquery()
    )
    converted = (
        select(
            JournalEntry.enrollment_id.label("eid"),
            func.max(JournalEntry.data["event_id"].as_integer()).label("event_id"),
        )
        .where(JournalEntry.scenario_id == scenario_id, JournalEntry.kind == "converted")
        .group_by(JournalEntry.enrollment_id)
        .subquery()
    )
    revenue: ColumnElement[Any] = cast(func.sum(0), Float)
    query = select(entered.c.arm, func.count(), func.count(converted.c.eid))
    joined = entered.outerjoin(converted, converted.c.eid == entered.c.eid)
    if value_property:
        revenue = func.sum(_amount(value_property, dialect))
        joined = joined.outerjoin(Event, and_(Event.id == converted.c.event_id))
    rows = conn.execute(query.add_columns(revenue).select_from(joined).group_by(entered.c.arm))
    return {
        arm: ArmCounts(arm, int(n), int(conv), float(money or 0)) for arm, n, conv, money in rows
    }


def kept_state(
    conn: Connection | Session, scenario_id: str, step_id: str
) -> tuple[dict[str, float], dict[str, float] | None]:
    """The stored running p-values and bandit shares of a step (empty before the first look)."""
    row = conn.execute(
        select(ExperimentState.p_values, ExperimentState.shares).where(
            ExperimentState.scenario_id == scenario_id, ExperimentState.step_id == step_id
        )
    ).first()
    if row is None:
        return {}, None
    return dict(row[0] or {}), (dict(row[1]) if row[1] else None)


def step_report(
    conn: Connection | Session, scenario: model.Scenario, step: model.SplitStep
) -> ExperimentReport:
    """One split step's report, from the journal and the stored experiment state."""
    from engine.insights.experiment_report import evaluate

    counts = arm_results(conn, scenario.id, step.id, goal_value(scenario))
    kept, shares = kept_state(conn, scenario.id, step.id)
    return evaluate(scenario.id, step, counts, kept, shares)


def reports(conn: Connection | Session, scenario: model.Scenario) -> list[ExperimentReport]:
    """Every experiment of a scenario (its split steps), judged now."""
    return [step_report(conn, scenario, step) for step in split_steps(scenario)]


def current_scenario(conn: Connection | Session, scenario_id: str) -> model.Scenario:
    """The scenario as its current version was published (NotFound if never published)."""
    bundle = conn.execute(
        select(ScenarioVersion.bundle)
        .join(ScenarioRecord, ScenarioRecord.current_version_id == ScenarioVersion.id)
        .where(ScenarioRecord.id == scenario_id)
    ).scalar()
    if bundle is None:
        raise NotFound(f"no published scenario '{scenario_id}'")
    return load_bundle(bundle, stored=True)


def published_scenarios(conn: Connection | Session) -> list[model.Scenario]:
    """Every published scenario with at least one split step, by id."""
    bundles = conn.execute(
        select(ScenarioVersion.bundle)
        .join(ScenarioRecord, ScenarioRecord.current_version_id == ScenarioVersion.id)
        .order_by(ScenarioRecord.id)
    ).scalars()
    found = (load_bundle(b, stored=True) for b in bundles)
    return [s for s in found if split_steps(s)]


@dataclass(frozen=True)
class Declared:
    """A declared winner: the version now routing new entries, and its YAML text."""

    published: PublishResult
    yaml: str
    source_path: str | None
    previous_yaml: str


def winner_text(text: str, step_id: str, arm: str) -> str:
    """The scenario text with `experiment.winner: ARM` on the split step (comments kept)."""
    doc = load_roundtrip(text)
    step = doc["steps"][step_id]
    if step.get("experiment") is None:
        step["experiment"] = {}
    step["experiment"]["winner"] = arm
    return dump_roundtrip(doc)


def declare_winner(
    session: Session, scenario_id: str, step_id: str, arm: str, actor: str, now: datetime
) -> Declared:
    """Publish a version whose split step routes every new entry to `arm`; audited.

    The holdout keeps its share (uplift stays measurable); contacts already past the split keep
    the arm they took, and enrollments stay on their version. The scenario's file is not
    written here: the caller (designer, CLI) saves it, so a later publish from the file keeps it.
    """
    record = session.get(ScenarioRecord, scenario_id)
    version = session.get(ScenarioVersion, record.current_version_id) if record else None
    if record is None or version is None:
        raise NotFound(f"no published scenario '{scenario_id}'")
    scenario = load_bundle(version.bundle, stored=True)
    step = scenario.steps.get(step_id)
    if not isinstance(step, model.SplitStep):
        splits = ", ".join(s.id for s in split_steps(scenario)) or "none"
        message = f"'{step_id}' is not a split step of '{scenario_id}' (splits: {splits})"
        raise WinnerRefused(message)
    names = [b.name for b in step.branches]
    if arm not in names:
        message = f"'{arm}' is not a branch of '{step_id}' (branches: {', '.join(names)})"
        raise WinnerRefused(message)
    previous = str(version.bundle["yaml"])
    text = winner_text(previous, step_id, arm)
    bundle = {**version.bundle, "yaml": text}
    result = publish_bundle(session, bundle, record.source_path, by=actor, now=now)
    session.add(
        AuditEntry(
            at=now,
            username=actor[:64],
            action="declare_winner",
            target_kind="scenario",
            target_id=scenario_id,
            details={"step": step_id, "arm": arm, "version": result.version_number,
                     "previous_winner": step.experiment.winner},
        )
    )  # fmt: skip
    return Declared(result, text, record.source_path, previous)


def save_state(
    conn: Connection | Session,
    scenario_id: str,
    step_id: str,
    now: datetime,
    p_values: Mapping[str, float],
    shares: Mapping[str, float] | None,
) -> None:
    """Store a look: the running p-values and the bandit shares (one row per step, upserted, so
    two workers looking at once both succeed; the later one's figures stay)."""
    dialect = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    values = {"p_values": dict(p_values), "shares": dict(shares) if shares else None}
    statement = insert(ExperimentState).values(
        scenario_id=scenario_id, step_id=step_id, looks=1, updated_at=now, **values
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["scenario_id", "step_id"],
            set_={**values, "looks": ExperimentState.looks + 1, "updated_at": now},
        )
    )
