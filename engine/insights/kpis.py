"""KPI reports read from the daily rollups (engine.insights.rollups), never from the journal.

`report` sums `kpi_daily` over a date range for some scenarios (a program's, or one), grouped
by day, scenario, step or channel, and derives the rates: conversion rate (conversions over
messages sent), cost per conversion and return on spend (revenue over cost). Cost is each
channel's cost per message times the messages, plus the scenarios' declared fixed cost, which
counts in the totals and the per-scenario rows (it belongs to no day, step or channel).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.engine import Connection

from engine.store.models import KpiDaily

GROUPINGS = ("day", "scenario", "step", "channel")
COUNTERS = (
    "entries", "sends", "delivered", "opens", "clicks", "bounces", "unsubscribes", "complaints",
    "conversions",
)  # fmt: skip
AMOUNTS = ("revenue", "cost")
DERIVED = ("conversion_rate", "cost_per_conversion", "return_on_spend")
METRICS = (*COUNTERS, *AMOUNTS, *DERIVED)
# KPIs where less is better: a target is met at or below it.
LOWER_IS_BETTER = frozenset({"bounces", "unsubscribes", "complaints", "cost",
                             "cost_per_conversion"})  # fmt: skip


@dataclass(frozen=True)
class Report:
    """Rows (one per group, in order) and the totals, every metric of METRICS in each."""

    by: str
    start: date | None
    end: date | None
    rows: list[dict[str, Any]]
    totals: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (days as ISO dates)."""
        rows = [{k: (v.isoformat() if isinstance(v, date) else v) for k, v in r.items()}
                for r in self.rows]  # fmt: skip
        return {
            "by": self.by,
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
            "rows": rows,
            "totals": self.totals,
        }

    def to_csv(self) -> str:
        """The rows as CSV, one column per metric; the totals as a last row."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([self.by, *METRICS])
        for row in self.rows:
            key = row[self.by]
            writer.writerow([key.isoformat() if isinstance(key, date) else key,
                             *(_cell(row[m]) for m in METRICS)])  # fmt: skip
        writer.writerow(["total", *(_cell(self.totals[m]) for m in METRICS)])
        return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.2f}"
    return str(value)


def derive(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with its rates; None where the denominator is zero."""
    out = dict(row)
    sends, conversions, cost = row["sends"], row["conversions"], row["cost"]
    out["conversion_rate"] = conversions / sends if sends else None
    out["cost_per_conversion"] = cost / conversions if conversions else None
    out["return_on_spend"] = row["revenue"] / cost if cost else None
    return out


def _summed(query: Select[Any], steps: bool = False) -> Select[Any]:
    """The sums of every counter; entries at the scenario level only, unless `steps` (a step's
    entries are the contacts that reached it: summed with the scenario's, they would count a
    contact once per step)."""
    table = KpiDaily.__table__
    sums = [func.coalesce(func.sum(table.c[c]), 0).label(c) for c in (*COUNTERS, *AMOUNTS)]
    if not steps:
        level = case((table.c.step_id == "", table.c.entries), else_=0)
        sums[0] = func.coalesce(func.sum(level), 0).label("entries")
    return query.add_columns(*sums).select_from(table)


def _group_column(by: str) -> Any:
    return {"day": KpiDaily.day, "scenario": KpiDaily.scenario_id, "step": KpiDaily.step_id,
            "channel": KpiDaily.channel}[by]  # fmt: skip


def report(
    conn: Connection,
    *,
    scenarios: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    by: str = "day",
    fixed_costs: Mapping[str, float] | None = None,
) -> Report:
    """The KPIs of `scenarios` (None: every one) from `start` to `end` (inclusive), by `by`."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}")
    filters: list[ColumnElement[bool]] = []
    if scenarios is not None:
        filters.append(KpiDaily.scenario_id.in_(list(scenarios)))
    if start is not None:
        filters.append(KpiDaily.day >= start)
    if end is not None:
        filters.append(KpiDaily.day <= end)
    grouping = list(filters)  # a step's or a channel's rows leave the scenario level out
    if by == "step":
        grouping.append(KpiDaily.step_id != "")
    if by == "channel":
        grouping.append(KpiDaily.channel != "")
    column = _group_column(by)
    summed = _summed(select(column.label(by)), steps=by == "step")
    grouped = summed.where(*grouping).group_by(column).order_by(column)
    fixed = dict(fixed_costs or {})
    rows = []
    for r in conn.execute(grouped).mappings():
        row = {k: _number(k, v) for k, v in r.items()}
        if by == "scenario":
            row["cost"] += fixed.get(row["scenario"], 0.0)
        rows.append(derive(row))
    if by == "step":
        steps = conn.execute(
            select(KpiDaily.step_id, KpiDaily.scenario_id).where(*grouping).distinct()
        ).all()
        owners: dict[str, list[str]] = {}
        for step, scenario in steps:
            owners.setdefault(step, []).append(scenario)
        for row in rows:
            row["scenarios"] = sorted(owners.get(row["step"], []))
    total = conn.execute(_summed(select()).where(*filters)).mappings().one()
    totals = {k: _number(k, v) for k, v in total.items()}
    present = scenarios if scenarios is not None else _scenarios_with_rows(conn)
    totals["cost"] += sum(fixed.get(s, 0.0) for s in present)
    return Report(by, start, end, rows, derive(totals))


def _scenarios_with_rows(conn: Connection) -> list[str]:
    return list(conn.execute(select(KpiDaily.scenario_id).distinct()).scalars())


def _number(name: str, value: Any) -> Any:
    if name in COUNTERS:
        return int(value or 0)
    if name in AMOUNTS:
        return float(value or 0.0)
    if name == "day" and isinstance(value, str):  # SQLite through a grouped column
        return date.fromisoformat(value)
    return value


# ------------------------------------------------------------------ periods and targets


def period_bounds(period: str, now: datetime, zone: str) -> tuple[date, date]:
    """The current day, week (Monday to Sunday), month or quarter in the workspace zone."""
    today = now.astimezone(ZoneInfo(zone)).date()
    if period == "day":
        return today, today
    if period == "week":
        start = today - timedelta(days=today.weekday())
        return start, start + timedelta(days=6)
    first_month = today.month if period == "month" else 3 * ((today.month - 1) // 3) + 1
    start = today.replace(month=first_month, day=1)
    months = 1 if period == "month" else 3
    year, month = divmod(start.month - 1 + months, 12)
    return start, date(start.year + year, month + 1, 1) - timedelta(days=1)


def target_met(kpi: str, value: float | None, target: float) -> bool | None:
    """Whether a value meets its target (None: no value yet)."""
    if value is None:
        return None
    return value <= target if kpi in LOWER_IS_BETTER else value >= target


def sends_by_channel(
    conn: Connection,
    *,
    scenarios: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, dict[date, int]]:
    """Messages sent per channel per day (for charts): channel → day → sends."""
    query = (
        select(KpiDaily.channel, KpiDaily.day, func.sum(KpiDaily.sends))
        .where(KpiDaily.channel != "")
        .group_by(KpiDaily.channel, KpiDaily.day)
    )
    if scenarios is not None:
        query = query.where(KpiDaily.scenario_id.in_(list(scenarios)))
    if start is not None:
        query = query.where(KpiDaily.day >= start)
    if end is not None:
        query = query.where(KpiDaily.day <= end)
    found: dict[str, dict[date, int]] = {}
    for channel, day, sends in conn.execute(query).all():
        found.setdefault(channel, {})[_number("day", day)] = int(sends or 0)
    return found
