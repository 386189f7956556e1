"""Merging edited data into a scenario file: the designer's canvas edits change only their lines."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ScenarioInvalid
from engine.spec.roundtrip import dump, load, merge
from engine.spec.yamlio import apply_text, parse_yaml

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def welcome() -> str:
    return (ROOT / "scenarios" / "welcome-series.yaml").read_text(encoding="utf-8")


def edited(text: str) -> dict[str, Any]:
    data, _ = parse_yaml(text)
    return copy.deepcopy(data)


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) of a line diff."""
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def test_unchanged_data_gives_the_same_text(welcome: str) -> None:
    assert apply_text(welcome, edited(welcome)) == welcome


def test_one_wait_duration_is_a_one_line_diff(welcome: str) -> None:
    data = edited(welcome)
    data["steps"]["wait-2d"]["duration"] = "3d"
    removed, added = changed_lines(welcome, apply_text(welcome, data))
    assert (removed, added) == (["    duration: 2d"], ["    duration: 3d"])


def test_comments_and_quotes_survive_an_edit(welcome: str) -> None:
    data = edited(welcome)
    data["priority"] = 60
    data["steps"]["welcome-code"]["content"]["text"] = "Code {{ data.offer_code }}"
    out = apply_text(welcome, data)
    assert "# The policy's spacing (12h) holds this back" in out
    assert out.startswith("# Welcome series with lead nurturing")
    assert '      text: "Code {{ data.offer_code }}"\n' in out  # still double-quoted
    assert len(changed_lines(welcome, out)[1]) == 2


def test_adding_a_step_appends_only_its_lines(welcome: str) -> None:
    data = edited(welcome)
    data["steps"]["follow-up"] = {"type": "wait", "duration": "1w", "next": "done"}
    removed, added = changed_lines(welcome, apply_text(welcome, data))
    assert removed == []
    assert added == ["  follow-up:", "    type: wait", "    duration: 1w", "    next: done"]


def test_layout_block_is_written_in_flow_style(welcome: str) -> None:
    data = edited(welcome)
    data["layout"] = {"welcome": [40, 80], "code-later": [300, 80]}
    out = apply_text(welcome, data)
    assert out.endswith("layout:\n  welcome: [40, 80]\n  code-later: [300, 80]\n")
    moved = edited(out)
    moved["layout"]["welcome"] = [60, 80]
    removed, added = changed_lines(out, apply_text(out, moved))
    assert (removed, added) == (["  welcome: [40, 80]"], ["  welcome: [60, 80]"])


def test_removed_keys_are_deleted_and_a_renamed_step_keeps_its_place(welcome: str) -> None:
    data = edited(welcome)
    data["steps"] = {("hello" if k == "welcome" else k): v for k, v in data["steps"].items()}
    del data["goal"]
    out = apply_text(welcome, data)
    assert "goal:" not in out
    assert next(iter(edited(out)["steps"])) == "hello"  # still the first step: still the start


def test_lists_merge_item_by_item_or_are_replaced(welcome: str) -> None:
    data = edited(welcome)
    data["steps"]["engaged"]["add_tags"] = ["warm"]
    data["triggers"] = [{"event": "signed_up"}, {"manual": True}]
    out = apply_text(welcome, data)
    assert "    add_tags: [warm]\n" in out  # same length: merged, flow style kept
    assert "  - event: signed_up\n  - manual: true\n" in out


def test_types_are_not_confused() -> None:
    doc = load("a: 1\nb: yes\nc: 2024-05-01\n")
    merge(doc, {"a": True, "b": "yes", "c": "2024-05-01"})
    assert dump(doc) == "a: true\nb: yes\nc: 2024-05-01\n"  # the date is not quoted


def test_text_that_does_not_parse_is_refused() -> None:
    with pytest.raises(ScenarioInvalid):
        apply_text("a: [1,\n", {"a": 1})


def test_an_empty_quoted_value_filled_in_is_written_plain() -> None:
    assert apply_text("a: ''\nb: 'x'\n", {"a": "sms", "b": "y"}) == "a: sms\nb: 'y'\n"
