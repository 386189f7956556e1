"""Placeholders left in a scenario: empty names, pointless conditions, one-off anniversaries, typos."""

from __future__ import annotations

import pytest

from tests.unit.spec.conftest import HEAD, problems_of


def test_empty_attribute_name_is_an_error() -> None:
    body = (
        "steps:\n  check:\n    type: condition\n    if: {attribute: '', op: eq, value: FR}\n"
        "    then: done\n  done:\n    type: exit\n"
    )
    problems = problems_of(body)
    assert [(p.code, p.line, p.field) for p in problems] == [
        ("schema.invalid", 9, "steps.check.if.attribute")
    ]


def test_condition_with_the_same_step_both_ways_is_a_warning() -> None:
    body = (
        "steps:\n  check:\n    type: condition\n    if: {tag: vip}\n"
        "    then: done\n    else: done\n  done:\n    type: exit\n"
    )
    (problem,) = problems_of(body)
    assert (problem.code, problem.severity, problem.line, problem.field) == (
        "graph.same_branches",
        "warning",
        11,
        "steps.check.else",
    )


def test_anniversary_without_reentry_always_is_a_warning() -> None:
    head = HEAD.replace("[{manual: true}]", "\n  - anniversary: birthday")
    body = "steps:\n  done:\n    type: exit\n"
    (problem,) = problems_of(body, head)
    assert (problem.code, problem.severity, problem.line) == (
        "trigger.anniversary_once",
        "warning",
        6,
    )
    assert "reentry: always" in (problem.hint or "")
    assert problems_of("entry: {reentry: always}\n" + body, head) == []


@pytest.mark.parametrize(
    ("yaml", "hint"),
    [
        ("entry: {reentry: cooldwn}\n", "did you mean 'cooldown'?"),
        ("kind: transactionnal\n", "did you mean 'transactional'?"),
        ("steps:\n  h:\n    type: webhook\n    url: https://a.example/\n    method: POTS\n", None),
        (
            "steps:\n  h:\n    type: send\n    channel: sms\n    content: {text: hi}\n"
            "    on_blocked: defr\n",
            "did you mean 'defer'?",
        ),
    ],
)
def test_enum_like_values_get_did_you_mean(yaml: str, hint: str | None) -> None:
    if "steps" not in yaml:
        yaml += "steps:\n  done:\n    type: exit\n"
    (problem,) = problems_of(yaml)
    assert problem.code == "schema.invalid"
    assert problem.hint == (hint or "did you mean 'POST'?")


def test_objective_typo_gets_did_you_mean() -> None:
    head = HEAD.replace("objective: other", "objective: baskett")
    (problem,) = problems_of("steps:\n  done:\n    type: exit\n", head)
    assert (problem.line, problem.hint) == (4, "did you mean 'basket'?")
