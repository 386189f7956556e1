"""One lint run reports schema and graph problems together, from the parts that parsed."""

from __future__ import annotations

from engine.spec.problems import Problem
from tests.unit.spec.conftest import HEAD, problems_of


def found(problems: list[Problem]) -> set[tuple[str, int | None, str | None]]:
    return {(p.code, p.line, p.step) for p in problems}


def test_schema_and_graph_problems_come_in_one_run() -> None:
    body = (
        "entry: {reentry: cooldwn}\n"
        "steps:\n"
        "  first:\n    type: wait\n    duraton: 1h\n    next: second\n"  # step does not load
        "  second:\n    type: update\n    add_tags: [a]\n    next: third\n"
        "  third:\n    type: update\n    add_tags: [b]\n    next: second\n"  # loop, no wait
        "  orphan:\n    type: exit\n"  # nothing leads here
    )
    problems = problems_of(body)
    assert {
        ("schema.invalid", 6, None),
        ("schema.unknown_field", 10, "first"),
        ("graph.loop_without_wait", 12, "second"),
        ("graph.unreachable", 20, "orphan"),
    } <= found(problems)
    # the step that did not load still leads to 'second': it is not reported unreachable
    assert not [p for p in problems if p.code == "graph.unreachable" and p.step != "orphan"]


def test_graph_of_a_broken_document_starts_where_it_says() -> None:
    body = (
        "objective: nope\nstart: b\nsteps:\n"
        "  a:\n    type: exit\n"
        "  b:\n    type: wait\n    duration: 1h\n"
    )
    head = HEAD.replace("objective: other\n", "")
    problems = problems_of(body, head)
    assert ("graph.unreachable", 8, "a") in found(problems)


def test_a_missing_start_is_reported_next_to_schema_problems() -> None:
    problems = problems_of("start: wiat\nsteps:\n  wait:\n    type: wat\n")
    assert {(p.code, p.line, p.hint) for p in problems} == {
        ("graph.missing_step", 6, "did you mean 'wait'?"),
        ("schema.invalid", 9, "did you mean 'wait'?"),
    }
