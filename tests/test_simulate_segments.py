"""`parcours simulate` with scenarios that start on segments: generated events move condition
segments through the real worker, planned joins move manual lists, and the report counts the
entries by segment trigger."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from designer.cli import cli
from engine.config import load_settings
from engine.insights.segment_simulation import (
    generate_memberships,
    generate_segment_events,
    simulation_segments,
)
from engine.insights.simulate import generate_contacts, simulate
from engine.spec.loader import load_scenario_file
from engine.store.models import SegmentChange

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
SCENARIO = """\
format_version: 1
id: vip-welcome
name: VIP welcome
objective: loyalty
kind: transactional
triggers:
  - segment_entered: vip-list
  - segment_exited: vip-list
  - segment_entered: repeat-buyers
entry:
  reentry: always
steps:
  hello:
    type: send
    channel: email
    content:
      subject: Welcome
      text: hello
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "segments").mkdir()
    for name in ("vip-list.yaml", "vip-list.csv", "repeat-buyers.yaml", "premium.yaml"):
        shutil.copy(ROOT / "scenarios" / "segments" / name, tmp_path / "segments" / name)
    (tmp_path / "vip-welcome.yaml").write_text(SCENARIO, encoding="utf-8")
    return tmp_path


def test_manual_lists_get_planned_joins_and_leaves(workspace: Path) -> None:
    segments = simulation_segments(workspace)
    scenario = load_scenario_file(workspace / "vip-welcome.yaml")
    contacts = generate_contacts(400)
    planned = generate_memberships([scenario], contacts, START, 10, segments)
    joins = [m for m in planned if m["change"] == "entered"]
    leaves = [m for m in planned if m["change"] == "exited"]
    assert {m["segment"] for m in planned} == {"vip-list"}  # repeat-buyers is a condition
    assert 150 < len(joins) < 250 and 0 < len(leaves) < len(joins)
    joined = {m["contact"]: m["at"] for m in joins}
    assert all(m["at"] > joined[m["contact"]] for m in leaves)
    assert all(START <= m["at"] <= START + timedelta(days=10) for m in planned)
    # a scenario that only starts on joining plans no leaves
    (workspace / "joins.yaml").write_text(
        SCENARIO.replace("  - segment_exited: vip-list\n", ""), encoding="utf-8"
    )
    only = generate_memberships(
        [load_scenario_file(workspace / "joins.yaml")], contacts, START, 10, segments
    )
    assert only and {m["change"] for m in only} == {"entered"}


def test_condition_segments_get_the_events_their_condition_reads(workspace: Path) -> None:
    segments = simulation_segments(workspace)
    scenario = load_scenario_file(workspace / "vip-welcome.yaml")
    contacts = generate_contacts(100)
    events = generate_segment_events([scenario], contacts, START, 10, segments)
    assert {e["name"] for e in events} == {"order_placed"}
    assert 30 < len({e["contact"] for e in events}) < 70
    premium = SCENARIO.replace("repeat-buyers", "premium")
    (workspace / "premium.yaml").write_text(premium, encoding="utf-8")
    # premium composes repeat-buyers: the events of both are generated
    composed = generate_segment_events(
        [load_scenario_file(workspace / "premium.yaml")], contacts, START, 10, segments
    )
    assert {e["name"] for e in composed} == {"order_placed"}
    assert generate_memberships([], contacts, START, 10, segments) == []


def test_the_run_enters_contacts_by_segment_trigger(workspace: Path, engine_url: str) -> None:
    segments = simulation_segments(workspace)
    scenario = load_scenario_file(workspace / "vip-welcome.yaml")
    contacts = generate_contacts(40)
    events = generate_segment_events([scenario], contacts, START, 4, segments)
    planned = generate_memberships([scenario], contacts, START, 4, segments)
    history: dict[str, int] = {}

    def inspect(engine: Engine) -> None:
        with engine.connect() as conn:
            rows = conn.execute(
                select(SegmentChange.change, func.count())
                .where(SegmentChange.segment_id == "vip-list", SegmentChange.reason == "simulation")
                .group_by(SegmentChange.change)
            )
            history.update({change: int(n) for change, n in rows})

    report = simulate(
        [workspace / "vip-welcome.yaml"], contacts, events, START, 4,
        settings=load_settings(env={}, scenarios_dir=workspace), database_url=engine_url,
        inspect=inspect, resolution=timedelta(minutes=10), memberships=planned,
    )  # fmt: skip
    joins = sum(1 for m in planned if m["change"] == "entered")
    leaves = len(planned) - joins
    assert history == {"entered": joins, "exited": leaves}
    by_trigger = report.segment_entries["vip-welcome"]
    assert by_trigger["segment_entered:vip-list"] == joins
    assert by_trigger["segment_exited:vip-list"] == leaves
    assert by_trigger["segment_entered:repeat-buyers"] > 0  # through the worker's refresh
    assert report.entries["vip-welcome"] == sum(by_trigger.values())


def test_the_command_reports_entries_by_segment_trigger(workspace: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["simulate", str(workspace / "vip-welcome.yaml"), "--generate", "30", "--days", "3",
         "--no-policy", "--resolution", "10m", "--start", "2026-03-02T00:00:00Z"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "on segment_entered:vip-list" in result.output
    assert "on segment_entered:repeat-buyers" in result.output
