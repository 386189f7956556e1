"""A program's figures: its panel (size and pressure states), its KPIs against their targets for
the current period, and what its scenarios cost beyond their messages.

The panel is counted in the database from its condition (engine.audience.segment_sql), a
`{segment: id}` panel from the segment's stored members; the pressure states are the stored
overall barometers (channel '*'), a contact with none being at equilibrium, as everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from engine.audience.membership import stored_members
from engine.audience.segment_sql import SegmentSQLError, compile_condition
from engine.insights.kpis import period_bounds, report, target_met
from engine.spec.programs import Program
from engine.store.models import Contact, Pressure, ScenarioRecord
from engine.worker.versions import VersionCache

PRESSURE_STATES = ("under", "equilibrium", "over")


@dataclass(frozen=True)
class PanelFigures:
    """How many contacts the panel holds, and how many are in each pressure state."""

    size: int | None  # None: the panel cannot be counted in the database
    pressure: dict[str, int]


def fixed_costs(conn: Connection, scenarios: Iterable[str] | None = None) -> dict[str, float]:
    """Each scenario's declared fixed cost (`cost: {fixed: ...}`), from its current version."""
    query = select(ScenarioRecord.id, ScenarioRecord.current_version_id).where(
        ScenarioRecord.current_version_id.is_not(None)
    )
    if scenarios is not None:
        query = query.where(ScenarioRecord.id.in_(list(scenarios)))
    cache = VersionCache()
    costs = {}
    for scenario_id, version_id in conn.execute(query).all():
        cost = cache.get(conn, int(version_id or 0)).fixed_cost
        if cost:
            costs[scenario_id] = cost
    return costs


def panel_figures(conn: Connection, program: Program, now: datetime) -> PanelFigures:
    """The panel's size and pressure distribution (every contact when there is no panel)."""
    if program.panel is None:
        members = select(Contact.id).where(Contact.merged_into.is_(None),
                                           Contact.erased_at.is_(None))  # fmt: skip
    else:
        try:
            members = compile_condition(
                program.panel, now, stored_members, dialect=conn.dialect.name
            )
        except SegmentSQLError:
            return PanelFigures(None, {})
    panel = members.subquery()
    size = int(conn.execute(select(func.count()).select_from(panel)).scalar() or 0)
    states = dict(
        conn.execute(
            select(Pressure.state, func.count())
            .join(panel, panel.c.id == Pressure.contact_id)
            .where(Pressure.channel == "*")
            .group_by(Pressure.state)
        ).all()
    )
    pressure = {state: int(states.get(state, 0)) for state in PRESSURE_STATES}
    pressure["equilibrium"] += size - sum(pressure.values())  # no barometer yet
    return PanelFigures(size, pressure)


def kpi_status(
    conn: Connection,
    program: Program,
    now: datetime,
    zone: str,
    costs: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Each KPI target of the program with its value over the current period."""
    out = []
    for target in program.kpis:
        start, end = period_bounds(target.period, now, zone)
        fixed = {s: c for s, c in (costs or {}).items() if s in program.scenarios}
        totals = report(
            conn, scenarios=program.scenarios, start=start, end=end, fixed_costs=fixed
        ).totals
        value = totals[target.kpi]
        out.append({
            "kpi": target.kpi, "target": target.target, "period": target.period,
            "from": start.isoformat(), "to": end.isoformat(), "value": value,
            "met": target_met(target.kpi, value, target.target),
        })  # fmt: skip
    return out


def overview(
    conn: Connection, programs: Iterable[Program], now: datetime, zone: str
) -> list[dict[str, Any]]:
    """Every program with its panel figures and KPIs against targets (JSON-ready)."""
    costs = fixed_costs(conn)
    found = []
    for program in programs:
        panel = panel_figures(conn, program, now)
        found.append({
            "id": program.id, "name": program.name, "objective": program.objective,
            "description": program.description, "scenarios": list(program.scenarios),
            "panel": {"size": panel.size, "pressure": panel.pressure},
            "kpis": kpi_status(conn, program, now, zone, costs),
            "budget": ({"amount": program.budget.amount, "period": program.budget.period}
                       if program.budget else None),
        })  # fmt: skip
    return found
