"""The workspace lints a file again only when the file or what its lint reads has changed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from designer import workspace as workspace_module
from designer.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def linted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, list[Any]]:
    folder = tmp_path / "scenarios"
    shutil.copytree(REPO / "scenarios", folder)
    monkeypatch.setattr(workspace_module, "_linted", type(workspace_module._linted)())
    calls: list[Any] = []
    real = Workspace.lint

    def counting(self: Workspace, text: str, path: Path | None = None) -> Any:
        calls.append(path.name if path else None)
        return real(self, text, path)

    monkeypatch.setattr(Workspace, "lint", counting)
    return Workspace(folder), calls


def _touch(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    stat = path.stat()  # a later modification time even on a coarse clock
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_an_unchanged_workspace_is_linted_once(linted: tuple[Workspace, list[Any]]) -> None:
    ws, calls = linted
    first = ws.all()
    assert len(calls) == len(first) > 3
    again = ws.all()
    assert len(calls) == len(first)
    assert [f.result for f in again] == [f.result for f in first]


def test_a_changed_file_alone_is_linted_again(linted: tuple[Workspace, list[Any]]) -> None:
    ws, calls = linted
    files = ws.all()
    path = ws.path_for("win-back")
    _touch(path, path.read_text(encoding="utf-8").replace("priority: 45", "priority: 46"))
    calls.clear()
    again = ws.all()
    assert calls == ["win-back.yaml"]
    assert next(f for f in again if f.id == "win-back").data["priority"] == 46
    assert len(again) == len(files)


def test_a_changed_template_lints_the_scenarios_again(linted: tuple[Workspace, list[Any]]) -> None:
    ws, calls = linted
    ws.all()
    subject = ws.templates / "win-back" / "subject.txt"
    _touch(subject, "{{ contact.first_name }, we miss you")  # a syntax error now
    calls.clear()
    again = ws.all()
    assert "win-back.yaml" in calls
    assert next(f for f in again if f.id == "win-back").errors > 0
