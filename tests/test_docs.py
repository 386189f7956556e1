"""The README stays honest: every setting, step type, channel and CLI command is documented."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from channels import channel_names
from designer.cli import cli
from engine.config import SETTINGS
from engine.spec.nodes import NODE_TYPES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [s.name for s in SETTINGS])
def test_every_setting_is_documented(name: str) -> None:
    assert f"`PARCOURS_{name}`" in README


@pytest.mark.parametrize("step_type", sorted(NODE_TYPES))
def test_every_step_type_is_documented(step_type: str) -> None:
    assert f"| `{step_type}` |" in README


@pytest.mark.parametrize("channel", channel_names())
def test_every_channel_is_documented(channel: str) -> None:
    assert f"| `{channel}` |" in README


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, command in group.commands.items():
        out.append(f"{prefix}{name}")
        if isinstance(command, click.Group):
            out.extend(_commands(command, f"{prefix}{name} "))
    return out


@pytest.mark.parametrize("command", _commands(cli))
def test_every_command_is_documented(command: str) -> None:
    assert f"parcours {command}" in README


def test_readme_starts_with_the_two_commands() -> None:
    block = README.split("```", 2)[1]
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    assert [line.split()[:2] for line in lines] == [["make", "run"], ["make", "test"]]


def _section(title: str) -> str:
    """The README text under a heading, up to the next heading of the same level or higher
    (lines of code blocks are never headings)."""
    lines, out, level, fenced = README.splitlines(), [], 0, False
    for line in lines:
        fenced ^= line.startswith("```")
        depth = len(line) - len(line.lstrip("#")) if line.startswith("#") and not fenced else 0
        if level and depth and depth <= level:
            break
        if level:
            out.append(line)
        elif depth and line.lstrip("#").strip() == title:
            level = depth
    assert level, title
    return "\n".join(out)


def _words(text: str) -> str:
    return " ".join(text.split())


def test_every_pressure_setting_is_documented_with_its_default() -> None:
    import dataclasses
    import re
    from datetime import timedelta

    from engine.policy.model import PressureConfig
    from engine.spec.durations import parse_duration

    rows = dict(
        re.findall(
            r"^\| `(\w+)` \| (.+?) \|",
            _section("The policy gate: quiet hours, caps, pressure"),
            re.M,
        )
    )
    for setting in dataclasses.fields(PressureConfig):
        default = getattr(PressureConfig(), setting.name)
        assert setting.name in rows, setting.name
        shown = rows[setting.name].strip("`")
        if isinstance(default, bool):
            assert shown == str(default).lower(), setting.name
        elif isinstance(default, timedelta):
            assert parse_duration(shown) == default, setting.name
        elif isinstance(default, float):
            assert float(shown) == default, setting.name
        elif dataclasses.is_dataclass(default):  # pressure.health: a table of its own
            assert shown == "see Pressure health", setting.name
        else:
            assert shown == "none", setting.name
    health = _section("The policy gate: quiet hours, caps, pressure")
    for setting in dataclasses.fields(PressureConfig().health):
        assert f"| `health.{setting.name}` |" in health, setting.name


def _recorded_events() -> set[str]:
    """Every event name the engine records by itself (engagement, on-site, delivery, replies)."""
    from engine.delivery import onsite
    from engine.insights import reports
    from engine.policy import engagement

    outcomes = (*reports.FINAL_STATUSES, "complained")
    return {engagement.OPENED, engagement.CLICKED, engagement.UNSUBSCRIBED, onsite.SHOWN,
            onsite.CLICKED, reports.REPLIED} | {
        f"{channel}_{status}" for channel in channel_names() for status in outcomes
    }  # fmt: skip


def test_every_signal_of_the_example_policy_is_an_event_that_happens() -> None:
    from engine.policy.loader import load_policy_file

    policy = load_policy_file(Path(__file__).resolve().parents[1] / "scenarios" / "policy.yaml")
    signals = _section("The policy gate: quiet hours, caps, pressure")
    custom = signals.split("**Signals**", 1)[1].split("\n- ", 1)[0]
    assert policy.pressure.signals
    for name in policy.pressure.signals:
        assert name in _recorded_events() or f"`{name}`" in custom, name
        assert f"{name}:" in signals, name  # the README shows the example policy as it is


def test_contacts_csv_columns_are_documented() -> None:
    from engine.audience.ingest import PROFILE_COLUMNS

    paragraph = README.split("Contacts CSV columns:", 1)[1].split("\n\n", 1)[0]
    for column in ("external_id", *PROFILE_COLUMNS, "consent:<channel>:<topic>", "suppressed"):
        assert f"`{column}`" in paragraph, column


def test_a_channel_with_no_reading_is_documented_as_the_engine_reads_it() -> None:
    from engine.policy.pressure import NO_READING

    assert f"a channel with no reading yet is `{NO_READING}`" in _words(_section("Conditions"))
