"""Graph checks: missing targets with their exact field, reachability, loops that never wait."""

from __future__ import annotations

import pytest

from engine.spec.graph import check_graph
from engine.spec.loader import lint_text
from engine.spec.model import Scenario
from engine.spec.problems import Problem
from engine.spec.schema import load_document
from engine.spec.yamlio import parse_yaml

HEAD = """\
format_version: 1
id: g
name: Graph
objective: other
triggers: [{manual: true}]
steps:
"""


def lint(steps: str, head: str = HEAD) -> list[Problem]:
    return lint_text(head + steps)[1]


def found(problems: list[Problem]) -> set[tuple[str, str, str | None]]:
    return {(p.code, p.field, p.hint) for p in problems}


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ("  a:\n    type: condition\n    if: {tag: x}\n    then: b\n    else: bb\n  b:\n    type: exit\n",
         "steps.a.else"),
        ("  a:\n    type: switch\n    cases:\n      - when: {tag: x}\n        next: b\n"
         "      - when: {tag: y}\n        next: bb\n    default: b\n  b:\n    type: exit\n",
         "steps.a.cases.1.next"),
        ("  a:\n    type: split\n    branches:\n      - name: x\n        weight: 1\n        next: b\n"
         "      - name: y\n        weight: 1\n        next: bb\n  b:\n    type: exit\n",
         "steps.a.branches.1.next"),
        ("  a:\n    type: wait_event\n    event: e\n    timeout: 1d\n    on_event: bb\n"
         "    on_timeout: b\n  b:\n    type: exit\n", "steps.a.on_event"),
    ],
)  # fmt: skip
def test_missing_step_names_the_exit_field(steps: str, field: str) -> None:
    problems = lint(steps)
    assert ("graph.missing_step", field, "did you mean 'b'?") in found(problems)
    (problem,) = [p for p in problems if p.code == "graph.missing_step"]
    lines = (HEAD + steps).splitlines()
    bad_line = next(i for i, line in enumerate(lines, start=1) if line.endswith(": bb"))
    assert problem.step == "a" and problem.line == bad_line


def test_start_naming_a_missing_step() -> None:
    problems = lint("  first:\n    type: exit\n", HEAD.replace("steps:", "start: frist\nsteps:"))
    assert found(problems) == {("graph.missing_step", "start", "did you mean 'first'?")}
    assert problems[0].line == 6


def test_unreachable_step_is_an_error_on_its_key_line() -> None:
    problems = lint("  a:\n    type: exit\n  lost:\n    type: exit\n")
    assert [(p.code, p.severity, p.step, p.line) for p in problems] == [
        ("graph.unreachable", "error", "lost", 9)
    ]


LOOP = """\
  check:
    type: condition
    if: {tag: vip}
    then: tag-it
    else: done
  tag-it:
    type: update
    add_score: 1
    next: BACK
  pause:
    type: wait
    duration: 1d
    next: check
  done:
    type: exit
"""


def test_loop_without_wait_names_its_steps() -> None:
    problems = lint(LOOP.replace("BACK", "check"))
    loops = [p for p in problems if p.code == "graph.loop_without_wait"]
    assert len(loops) == 1 and loops[0].extra["cycle"] == ["check", "tag-it"]
    assert "check → tag-it → check" in loops[0].message and loops[0].line == 7


def test_loop_through_a_wait_is_fine() -> None:
    problems = lint(LOOP.replace("BACK", "pause"))
    assert problems == []


def test_self_loop_without_wait() -> None:
    problems = lint("  a:\n    type: update\n    add_score: 1\n    next: a\n")
    assert [p.code for p in problems] == ["graph.loop_without_wait"]


def test_dead_end_warnings() -> None:
    problems = lint(
        "  a:\n    type: split\n    branches:\n      - name: x\n        weight: 1\n"
        "  b:\n    type: wait_event\n    event: e\n    timeout: 1d\n"
    )
    codes = {(p.code, p.severity) for p in problems}
    assert ("graph.split_without_exit", "warning") in codes
    assert ("graph.unreachable", "error") in codes  # b: nothing leads there


def test_wait_event_without_exits_is_a_warning_only() -> None:
    scenario, problems = lint_text(
        HEAD + "  b:\n    type: wait_event\n    event: e\n    timeout: 1d\n"
    )
    assert [(p.code, p.severity) for p in problems] == [("graph.wait_without_exit", "warning")]
    assert scenario is not None


def test_start_scenario_naming_itself() -> None:
    problems = lint("  again:\n    type: start_scenario\n    scenario: g\n")
    assert found(problems) == {
        ("graph.self_start", "steps.again.scenario",
         "use a loop with a wait inside the scenario instead")
    }  # fmt: skip


def test_check_graph_on_a_scenario_object() -> None:
    data, _ = parse_yaml(HEAD + "  a:\n    type: wait\n    duration: 1h\n    next: gone\n")
    problems = check_graph(Scenario(**load_document(data)))
    assert [(p.code, p.path, p.line) for p in problems] == [
        ("graph.missing_step", ("steps", "a", "next"), None)
    ]
