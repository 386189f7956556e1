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
