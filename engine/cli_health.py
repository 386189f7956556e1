"""`parcours pressure health`: the early-warning signs of over-pressure per channel (open,
click, unsubscribe, complaint and bounce rates and the over-pressured share against their own
trailing baseline), registered on the `parcours` group by engine.cli."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import click

from engine.cli_common import database, root_settings
from engine.policy.health import health, health_lines
from engine.policy.loader import load_policy_file
from engine.policy.loading import policy_path
from engine.store.db import utcnow


@click.group(name="pressure")
def pressure() -> None:
    """The pressure barometer across the base."""


@pressure.command(name="health")
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="ID",
    help="Only the sends of this scenario (repeatable) and the events they caused.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def pressure_health(ctx: click.Context, scenarios: tuple[str, ...], as_json: bool) -> None:
    """Per channel, the rates of the last `recent` days against the `baseline` before them,
    and the signals that crossed their thresholds (policy.yaml: pressure.health)."""  # fmt: skip
    settings = root_settings(ctx)
    policy = load_policy_file(policy_path(settings))
    with database(settings) as engine, engine.connect() as conn:
        result = health(conn, utcnow(), policy, scenarios or None, ZoneInfo(settings.timezone))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    for line in health_lines(result):
        click.echo(line)
