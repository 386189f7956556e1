"""Segments in scenarios: segment triggers, `{segment: ID}` audiences and conditions,
`exit_on: {segment_exited: ID}`, their lint against the segments folder, and the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.spec import model
from engine.spec.conditions import All, SegmentTest
from engine.spec.jsonschema import scenario_json_schema, segment_json_schema
from engine.spec.lint import lint_paths
from engine.spec.loader import lint_document, lint_text
from engine.spec.yamlio import parse_yaml

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[3]
SCENARIO = """\
format_version: 1
id: vip-welcome
name: VIP welcome
objective: loyalty
audience:
  all:
    - segment: premium
    - not:
        segment: vip-list
triggers:
  - segment_entered: premium
  - segment_exited: vip-list
entry:
  reentry: cooldown
  cooldown: 30d
exit_on:
  - event: unsubscribed
  - segment_exited: premium
steps:
  check:
    type: condition
    if:
      segment: repeat-buyers
    then: done
    else: stop
  done:
    type: exit
  stop:
    type: exit
"""


def _segments(folder: Path, *ids: str) -> None:
    (folder / "segments").mkdir(parents=True, exist_ok=True)
    for segment_id in ids:
        text = f"format_version: 1\nid: {segment_id}\nname: N\ncondition: {{tag: {segment_id}}}\n"
        (folder / "segments" / f"{segment_id}.yaml").write_text(text, encoding="utf-8")


def test_the_new_forms_load() -> None:
    scenario, problems = lint_text(SCENARIO)
    assert problems == [] and scenario is not None
    assert scenario.triggers == (
        model.SegmentEnteredTrigger("premium"),
        model.SegmentExitedTrigger("vip-list"),
    )
    assert scenario.entry.reentry == "cooldown"
    assert scenario.exit_on == (model.ExitRule("unsubscribed"),)
    assert scenario.segment_exits == (model.SegmentExitRule("premium"),)
    assert isinstance(scenario.audience, All)
    assert scenario.audience.items[0] == SegmentTest("premium")
    assert scenario.segments() == frozenset({"premium", "vip-list", "repeat-buyers"})
    # a segment exit is not an event the scenario listens to
    assert scenario.listened_events() == frozenset({"unsubscribed"})


@pytest.mark.parametrize(
    ("old", "new", "line", "hint"),
    [
        ("  - segment_entered: premium", "  - segment_enterd: premium", 11,
         "did you mean 'segment_entered'?"),
        ("  - segment_exited: premium", "  - segment_exit: premium", 18,
         "did you mean 'segment_exited'?"),
        ("  - segment_exited: premium", "  - segment_exited: premium\n    where: []", 19, None),
    ],
)  # fmt: skip
def test_misspelled_forms_are_located(old: str, new: str, line: int, hint: str | None) -> None:
    assert old in SCENARIO
    _, problems = lint_text(SCENARIO.replace(old, new), "vip-welcome.yaml")
    assert line in [p.line for p in problems], [p.format() for p in problems]
    if hint:
        assert hint in [p.hint for p in problems]


def test_an_unknown_exit_rule_names_the_two_kinds() -> None:
    _, problems = lint_text(SCENARIO.replace("  - event: unsubscribed", "  - evnt: unsubscribed"))
    assert [(p.line, p.message, p.hint) for p in problems] == [
        (17, "Unknown exit rule; use event, segment_exited.", "did you mean 'event'?")
    ]


def test_references_are_checked_against_the_segments_folder(tmp_path: Path) -> None:
    _segments(tmp_path, "premium", "repeat-buyers", "vip-lists")
    (tmp_path / "vip-welcome.yaml").write_text(SCENARIO, encoding="utf-8")
    problems = lint_paths([tmp_path])
    assert [(p.code, p.line, p.column, p.step, p.hint) for p in problems] == [
        ("segment.unknown", 9, 18, None, "did you mean 'vip-lists'?"),
        ("segment.unknown", 12, 21, None, "did you mean 'vip-lists'?"),
    ]
    assert all(p.file == str(tmp_path / "vip-welcome.yaml") for p in problems)


def test_every_kind_of_reference_is_checked(tmp_path: Path) -> None:
    (tmp_path / "vip-welcome.yaml").write_text(SCENARIO, encoding="utf-8")
    result = lint_document(SCENARIO, "vip-welcome.yaml", tmp_path / "templates")
    unknown = [(p.line, p.step, p.field) for p in result.problems if p.code == "segment.unknown"]
    assert unknown == [
        (7, None, "audience.all.0.segment"),
        (9, None, "audience.all.1.not.segment"),
        (11, None, "triggers.0.segment_entered"),
        (12, None, "triggers.1.segment_exited"),
        (18, None, "exit_on.1.segment_exited"),
        (23, "check", "steps.check.if.segment"),
    ]
    assert result.problems[0].hint == "no segments are defined in segments/ beside the scenarios"
    assert result.scenario is None, "an unknown segment blocks publishing"


def test_a_bundle_is_not_checked_against_a_folder() -> None:
    scenario, problems = lint_text(SCENARIO)
    assert problems == [] and scenario is not None


def test_references_checked_even_when_the_structure_fails(tmp_path: Path) -> None:
    _segments(tmp_path, "premium", "repeat-buyers", "vip-list")
    broken = SCENARIO.replace("objective: loyalty", "objective: loyality").replace(
        "segment: repeat-buyers", "segment: repeat-buyer"
    )
    result = lint_document(broken, "vip-welcome.yaml", tmp_path / "templates")
    assert {(p.code, p.line) for p in result.problems} == {
        ("schema.invalid", 4),
        ("segment.unknown", 23),
    }


def test_lint_reads_segments_and_scenarios_together(tmp_path: Path) -> None:
    _segments(tmp_path, "premium", "repeat-buyers", "vip-list")
    (tmp_path / "segments" / "loop.yaml").write_text(
        "format_version: 1\nid: loop\nname: L\ncondition: {segment: loop}\n", encoding="utf-8"
    )
    (tmp_path / "vip-welcome.yaml").write_text(SCENARIO, encoding="utf-8")
    problems = lint_paths([tmp_path])
    assert [(Path(p.file or "").name, p.code) for p in problems] == [("loop.yaml", "segment.cycle")]
    # a segment file or the segments folder may be linted alone, with its siblings known
    assert [p.code for p in lint_paths([tmp_path / "segments"])] == ["segment.cycle"]
    assert [p.code for p in lint_paths([tmp_path / "segments" / "premium.yaml"])] == []


# ------------------------------------------------------------------ JSON Schema


def _validator(schema: dict[str, Any]) -> Any:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert json.loads(json.dumps(schema)) == schema
    return jsonschema.Draft202012Validator(schema)


def test_scenario_schema_accepts_the_new_forms() -> None:
    validator = _validator(scenario_json_schema())
    data, _ = parse_yaml(SCENARIO)
    assert [e.message for e in validator.iter_errors(data)] == []
    for old, new in [
        ("segment_entered: premium", "segment_enterd: premium"),
        ("  - segment_exited: premium", "  - segment_exited: premium\n    where: []"),
        ("segment: repeat-buyers", "segment: 'not an id'"),
    ]:
        data, _ = parse_yaml(SCENARIO.replace(old, new))
        assert list(validator.iter_errors(data)), new


@pytest.mark.parametrize(
    "path", sorted((ROOT / "scenarios" / "segments").glob("*.yaml")), ids=lambda p: p.stem
)
def test_segment_schema_accepts_the_examples(path: Path) -> None:
    validator = _validator(segment_json_schema())
    data, _ = parse_yaml(path.read_text(encoding="utf-8"))
    assert [e.message for e in validator.iter_errors(data)] == []


@pytest.mark.parametrize(
    "text",
    [
        "format_version: 1\nid: s\nname: S\n",
        "format_version: 1\nid: s\nname: S\ncondition: {tag: x}\nmanual: {source: s.csv}\n",
        "format_version: 1\nid: s\nname: S\ncondition: {tag: x}\nextra: 1\n",
        "format_version: 2\nid: s\nname: S\ncondition: {tag: x}\n",
        "format_version: 1\nid: s\nname: S\nmanual: {source: s.xlsx}\n",
    ],
)
def test_segment_schema_rejects_wrong_shapes(text: str) -> None:
    validator = _validator(segment_json_schema())
    data, _ = parse_yaml(text)
    assert list(validator.iter_errors(data))
    assert segment_json_schema()["title"] == "Parcours segment"
