"""`parcours experiments [SCENARIO]` and `parcours experiment declare SCENARIO STEP ARM`: the
split steps' results from the command line, and the winner declared by an operator; registered
on the `parcours` group by engine.cli.

Results come from the published versions and the journal (engine.insights.experiments).
Declaring a winner publishes a version; the scenario's file gets the same `winner:` line when it
still holds the published text, so the next publish from the file keeps the winner.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.cli_common import os_user, root_settings
from engine.errors import NotFound
from engine.store.db import make_engine, upgrade, utcnow


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _echo_report(r: dict[str, Any]) -> None:
    label = f" ({r['label']})" if r["label"] else ""
    click.echo(f"{r['scenario']} / {r['step']}{label}: {r['mode']} test, alpha {r['alpha']}")
    click.echo(f"  {'arm':<12} {'entered':>8} {'conv.':>7} {'rate':>8} {'95% interval':>19} "
               f"{'p':>7} {'P(best)':>8} {'rev./contact':>12}")  # fmt: skip
    for a in r["arms"]:
        low, high = a["interval"]
        click.echo(
            f"  {a['name']:<12} {a['entered']:>8} {a['converted']:>7} {_percent(a['rate']):>8} "
            f"{_percent(low) + ' - ' + _percent(high):>19} {_p(a['p_value']):>7} "
            f"{_percent(a['probability_best']):>8} {a['revenue_per_contact']:>12.2f}"
        )
    u = r["uplift"]
    if u is not None:
        low, high = u["absolute_interval"]
        click.echo(
            f"  uplift vs holdout: {100 * u['absolute']:+.2f} points ({100 * low:+.2f} to "
            f"{100 * high:+.2f}), {u['incremental_conversions']:+.0f} conversions, "
            f"{u['incremental_revenue']:+.2f} revenue"
        )
    if r["minimum_sample"]:
        click.echo(f"  minimum sample: {r['minimum_sample']} per arm")
    click.echo(f"  decision: {_decision(r['decision'])}")


def _decision(d: dict[str, Any]) -> str:
    if d["status"] == "collecting" and d["more_per_arm"]:
        return f"keep collecting: {d['more_per_arm']} more per arm"
    if d["status"] in ("winner", "declared"):
        return f"{d['status']}: {d['winner']}"
    return str(d["status"]).replace("_", " ")


@click.command(name="experiments")
@click.argument("scenario_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def experiments(ctx: click.Context, scenario_id: str | None, as_json: bool) -> None:
    """Every split step's arms, rates with intervals, tests, uplift and decision."""
    from engine.insights.experiments import current_scenario, published_scenarios, reports

    engine = make_engine(root_settings(ctx).db_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            try:
                found = [current_scenario(conn, scenario_id)] if scenario_id else (
                    published_scenarios(conn)
                )  # fmt: skip
            except NotFound as exc:
                raise click.ClickException(str(exc)) from None
            results = [r.to_dict() for sc in found for r in reports(conn, sc)]
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    if not results:
        click.echo("no experiments (no split step in the published scenarios)")
    for r in results:
        _echo_report(r)


@click.group(name="experiment")
def experiment() -> None:
    """One experiment: declare its winner."""


@experiment.command(name="declare")
@click.argument("scenario_id")
@click.argument("step_id")
@click.argument("arm")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def declare(ctx: click.Context, scenario_id: str, step_id: str, arm: str, yes: bool) -> None:
    """Route every new entry of STEP to ARM (the holdout stays); audited."""
    from sqlalchemy.orm import Session

    from engine.insights.experiments import WinnerRefused, declare_winner

    if not yes:
        click.confirm(
            f"Send every new entry of {scenario_id}/{step_id} to '{arm}'? Contacts already "
            "inside keep their arm.",
            abort=True,
        )
    engine = make_engine(root_settings(ctx).db_url)
    try:
        upgrade(engine)
        with Session(engine) as session, session.begin():
            done = declare_winner(session, scenario_id, step_id, arm, os_user(), utcnow())
    except (NotFound, WinnerRefused) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"{scenario_id}: version {done.published.version_number} sends new entries of "
               f"{step_id} to {arm}")  # fmt: skip
    _write_file(done.source_path, done.previous_yaml, done.yaml)


def _write_file(source: str | None, previous: str, text: str) -> None:
    """Put the winner in the scenario's file too, unless it was edited since it was published."""
    path = Path(source) if source else None
    if path is None or not path.is_file():
        return
    if path.read_text(encoding="utf-8") != previous:
        hint = "add 'winner:' under the step's experiment, or the next publish from it undoes it"
        click.echo(f"{path} changed since it was published: {hint}", err=True)
        return
    path.write_text(text, encoding="utf-8")
    click.echo(f"{path}: winner written")
