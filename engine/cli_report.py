"""`parcours report` and `parcours programs`: KPIs from the daily rollups, and the programs with
their panel and targets, registered on the `parcours` group by engine.cli.

Programs come from `programs/` beside the scenarios; a folder with errors stops with the
problems (file:line), exit status 1, as `parcours lint` prints them.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import click

from engine.cli_common import database, root_settings
from engine.config import Settings
from engine.insights.kpis import GROUPINGS, METRICS, Report, report
from engine.insights.programs import fixed_costs, overview
from engine.policy.health import health, health_lines
from engine.policy.loader import load_policy_file
from engine.policy.loading import policy_path
from engine.spec.lint import format_problems
from engine.spec.programs import Program, ProgramFolder, workspace_programs
from engine.store.db import utcnow

# The text table's columns (--json and --csv give every metric).
SHOWN = ("entries", "sends", "opens", "clicks", "conversions", "conversion_rate", "revenue",
         "cost", "return_on_spend")  # fmt: skip


def _programs(settings: Settings) -> ProgramFolder:
    folder = workspace_programs(settings.scenarios_dir)
    errors = [p for p in folder.problems if p.severity == "error"]
    if errors:
        click.echo(format_problems(errors), err=True)
        raise SystemExit(1)
    return folder


def _program(folder: ProgramFolder, program_id: str) -> Program:
    found = folder.programs.get(program_id)
    if found is None:
        known = ", ".join(sorted(folder.programs)) or "none"
        raise click.BadParameter(
            f"no program '{program_id}' (programs: {known})", param_hint="--program"
        )
    return found


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name in ("conversion_rate",):
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


def _table(found: Report) -> str:
    key = found.by
    width = max([len(key), 5, *(len(str(r[key])) for r in found.rows)])
    cells = [[_cell(m, row[m]) for m in SHOWN] for row in found.rows]
    total = [_cell(m, found.totals[m]) for m in SHOWN]
    # each column as wide as its name or its widest figure: no name cut short
    widths = [max(len(m), *(len(c[i]) for c in [*cells, total])) for i, m in enumerate(SHOWN)]

    def line(first: str, values: list[str]) -> str:
        return f"{first:<{width}} " + " ".join(
            f"{v:>{w}}" for v, w in zip(values, widths, strict=True)
        )

    lines = [line(key, list(SHOWN))]
    lines += [line(str(row[key]), c) for row, c in zip(found.rows, cells, strict=True)]
    lines.append(line("total", total))
    return "\n".join(lines)


@click.command(name="report")
@click.option("--program", "program_id", help="Only the scenarios of this program.")
@click.option("--scenario", "scenario_id", help="Only this scenario.")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), help="First day (YYYY-MM-DD).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), help="Last day, included.")
@click.option("--by", type=click.Choice(GROUPINGS), default="day", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the report as CSV.")
@click.pass_context
def report_command(
    ctx: click.Context, program_id: str | None, scenario_id: str | None, start: Any, end: Any,
    by: str, as_json: bool, as_csv: bool,
) -> None:  # fmt: skip
    """KPIs per day, scenario, step or channel, from the daily rollups (days in the workspace
    zone): entries, messages, opens, clicks, conversions, revenue, cost and their rates; then
    the pressure health of the same scenarios (all of them without --program or --scenario)."""
    settings = root_settings(ctx)
    if as_json and as_csv:
        raise click.UsageError("choose --json or --csv, not both")
    scenarios: list[str] | None = None
    if program_id:
        scenarios = list(_program(_programs(settings), program_id).scenarios)
    if scenario_id:
        scenarios = [s for s in (scenarios or [scenario_id]) if s == scenario_id]
    first: date | None = start.date() if start else None
    last: date | None = end.date() if end else None
    if first and last and first > last:
        raise click.BadParameter("--from is after --to", param_hint="--from")
    policy = None if as_csv else load_policy_file(policy_path(settings))
    with database(settings) as engine, engine.connect() as conn:
        found = report(conn, scenarios=scenarios, start=first, end=last, by=by,
                       fixed_costs=fixed_costs(conn, scenarios))  # fmt: skip
        zone = ZoneInfo(settings.timezone)
        signals = health(conn, utcnow(), policy, scenarios, zone) if policy else None
    if as_csv or signals is None:
        click.echo(found.to_csv(), nl=False)
    elif as_json:
        body = {**found.to_json(), "timezone": settings.timezone, "health": signals.to_dict()}
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(f"days in {settings.timezone}; metrics: {', '.join(METRICS)} (--json)")
        click.echo(_table(found))
        click.echo("")
        for line in health_lines(signals):
            click.echo(line)


@click.command(name="programs")
@click.option("--json", "as_json", is_flag=True, help="Print the programs as JSON.")
@click.pass_context
def programs_command(ctx: click.Context, as_json: bool) -> None:
    """The programs with their panel size, the panel's pressure states and each KPI against its
    target over the current period."""
    settings = root_settings(ctx)
    folder = _programs(settings)
    with database(settings) as engine, engine.connect() as conn:
        found = overview(conn, folder.programs.values(), utcnow(), settings.timezone)
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo("no programs in programs/ beside the scenarios")
        return
    for p in found:
        panel = p["panel"]
        size = "?" if panel["size"] is None else f"{panel['size']:,}"
        states = " ".join(f"{k} {v:,}" for k, v in panel["pressure"].items())
        click.echo(f"{p['id']}  {p['name']} ({p['objective']}): {', '.join(p['scenarios'])}")
        click.echo(f"  panel {size} contacts; pressure {states or '-'}")
        for k in p["kpis"]:
            mark = {True: "met", False: "behind", None: "no data"}[k["met"]]
            value, target = _cell(k["kpi"], k["value"]), _cell(k["kpi"], k["target"])
            click.echo(
                f"  {k['kpi']:<20} {value:>12} target {target:>10} this {k['period']}: {mark}"
            )
