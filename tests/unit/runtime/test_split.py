"""Split steps: the arm belongs to the contact, and the holdout waits out the goal window.

An arm is a stable hash of (scenario, step, contact's external id, salt), so the same people get
the same arms whatever order they arrive in, however often they re-enter and whichever worker runs
them. The proportions are a statistical property of that deterministic hash, checked at 10,000.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest

from engine.runtime.interpreter import Interpreter, Transition
from engine.runtime.state import (
    ACTIVE,
    ATTRIBUTABLE,
    CONVERTED,
    EXITED,
    EnrollmentState,
    EventView,
    History,
)
from engine.spec.jsonschema import scenario_json_schema
from engine.spec.loader import lint_text
from engine.spec.model import Scenario
from tests.unit.runtime.test_interpreter import (
    DAY,
    HEAD,
    HOUR,
    T0,
    FakeGate,
    build,
    contact,
    ev,
    fresh,
    history,
    kinds,
)

PEOPLE = [f"customer-{n:05d}" for n in range(10_000)]

SPLIT = """\
{goal}steps:
  test:
    type: split
    holdout: 10{salt}
    branches:
      - name: a
        weight: 70
        next: send-a
      - name: b
        weight: 30
        next: send-b
  send-a:
    type: send
    channel: email
    content: {{subject: A, text: A}}
  send-b:
    type: send
    channel: email
    content: {{subject: B, text: B}}
"""
WINDOW = "goal:\n  event: order_placed\n  within: 30d\nexit_on:\n  - event: unsubscribed\n"


def split(goal: str = "", salt: str | None = None) -> Scenario:
    return build(SPLIT.format(goal=goal, salt=f"\n    salt: {salt}" if salt else ""))


def arms(scenario: Scenario, people: list[str], first_id: int = 1) -> dict[str, str]:
    """Each person's arm when they enter in this order (enrollment ids given by arrival)."""
    it = Interpreter(scenario, FakeGate())
    out = {}
    for enrollment_id, who in enumerate(people, start=first_id):
        state = fresh(scenario, enrollment_id=enrollment_id)
        tr = it.advance(state, contact(external_id=who), History(), T0)
        out[who] = tr.state.vars["variant"]
    return out


@pytest.fixture(scope="module")
def in_order() -> dict[str, str]:
    return arms(split(), PEOPLE)


def test_the_same_contacts_in_another_order_get_the_same_arms(in_order: dict[str, str]) -> None:
    assert arms(split(), PEOPLE[::-1]) == in_order


def test_a_contact_who_enters_again_keeps_the_arm(in_order: dict[str, str]) -> None:
    # a later enrollment of the same people, by another interpreter instance
    again = arms(split(), PEOPLE[:2000], first_id=50_001)
    assert again == {who: in_order[who] for who in PEOPLE[:2000]}


def test_arms_follow_the_weights_within_one_and_a_half_points(in_order: dict[str, str]) -> None:
    shares = {arm: n / len(PEOPLE) for arm, n in Counter(in_order.values()).items()}
    # 10% holdout; the other 90% split 70/30
    expected = {"holdout": 0.10, "a": 0.90 * 0.70, "b": 0.90 * 0.30}
    assert shares.keys() == expected.keys()
    for arm, share in expected.items():
        assert abs(shares[arm] - share) <= 0.015, (arm, shares[arm])


def test_a_salt_reshuffles_the_arms(in_order: dict[str, str]) -> None:
    salted = arms(split(salt="spring-2026"), PEOPLE)
    moved = sum(salted[who] != in_order[who] for who in PEOPLE) / len(PEOPLE)
    # two independent draws of a 10/63/27 split agree for about 48% of contacts
    assert 0.45 <= moved <= 0.59, moved
    assert arms(split(salt="spring-2026"), PEOPLE[:500]) == {w: salted[w] for w in PEOPLE[:500]}
    shares = Counter(salted.values())
    assert abs(shares["holdout"] / len(PEOPLE) - 0.10) <= 0.015


def test_salt_is_an_optional_string_of_the_split_step() -> None:
    assert split(salt="x").steps["test"].salt == "x"  # type: ignore[attr-defined]
    assert split().steps["test"].salt is None  # type: ignore[attr-defined]
    step = scenario_json_schema()["$defs"]["step_split"]["properties"]
    assert step["salt"]["anyOf"][0]["type"] == "string"
    assert "reshuffles" in step["salt"]["description"]


# ---------------------------------------------------------------- holdout


def _held(scenario: Scenario) -> tuple[str, EnrollmentState]:
    """A contact in the holdout, advanced to the split at T0."""
    it = Interpreter(scenario, FakeGate())
    for who in PEOPLE:
        tr = it.advance(fresh(scenario), contact(external_id=who), History(), T0)
        if tr.state.vars["variant"] == "holdout":
            assert tr.sends == []
            return who, tr.state
    raise AssertionError("nobody in the holdout")


def _advance(
    scenario: Scenario, who: str, state: EnrollmentState, now: datetime, *events: EventView
) -> Transition:
    it = Interpreter(scenario, FakeGate())
    return it.advance(state, contact(external_id=who), history(*events), now)


def test_holdout_stays_enrolled_until_the_goal_window_closes_then_exits() -> None:
    scenario = split(WINDOW)
    who, held = _held(scenario)
    assert (held.status, held.step_id, held.vars["variant"]) == (ACTIVE, "test", "holdout")
    assert held.due_at == T0 + 30 * DAY
    # a wake-up inside the window (another event) keeps it where it is, receiving nothing
    tr = _advance(scenario, who, held, T0 + 3 * DAY)
    assert (tr.state.status, tr.state.due_at, tr.sends) == (ACTIVE, T0 + 30 * DAY, [])
    tr = _advance(scenario, who, tr.state, T0 + 30 * DAY)
    assert (tr.state.status, tr.state.end_reason) == (EXITED, "holdout")
    assert kinds(tr.journal) == [("exited", "test", "holdout")]
    assert tr.sends == [] and tr.state.vars[ATTRIBUTABLE] is True


def test_holdout_conversion_inside_the_window_is_journaled_as_control() -> None:
    scenario = split(WINDOW)
    who, held = _held(scenario)
    order = ev(9, "order_placed", T0 + 12 * DAY)
    tr = _advance(scenario, who, held, T0 + 12 * DAY, order)
    assert (tr.state.status, tr.state.end_reason) == (CONVERTED, "goal:order_placed")
    assert tr.journal[-1].data == {"event_id": 9, "variant": "holdout"}


def test_holdout_leaves_on_an_exit_rule_like_any_enrollment() -> None:
    scenario = split(WINDOW)
    who, held = _held(scenario)
    tr = _advance(scenario, who, held, T0 + HOUR, ev(9, "unsubscribed", T0 + HOUR))
    assert (tr.state.status, tr.state.end_reason) == (EXITED, "exit_on:unsubscribed")


@pytest.mark.parametrize("goal", ["", "goal:\n  event: order_placed\n"])
def test_holdout_without_a_goal_window_exits_at_once(goal: str) -> None:
    """Nothing to measure (no goal, or a goal with no `within`): the holdout leaves at the split."""
    _, held = _held(split(goal))
    assert (held.status, held.end_reason, held.due_at) == (EXITED, "holdout", None)
    assert ATTRIBUTABLE not in held.vars


def test_journal_shows_the_holdout_and_when_it_ends() -> None:
    scenario = split(WINDOW)
    it = Interpreter(scenario, FakeGate())
    who, _ = _held(scenario)
    tr = it.advance(fresh(scenario), contact(external_id=who), History(), T0)
    assert kinds(tr.journal) == [("step", "test", "holdout")]
    assert tr.journal[0].data == {"until": (T0 + 30 * DAY).isoformat()}


def test_holdout_is_not_a_branch_name() -> None:
    text = HEAD + SPLIT.format(goal="", salt="").replace("name: b", "name: holdout")
    scenario, problems = lint_text(text, "test.yaml")
    assert scenario is None
    (problem,) = [p for p in problems if p.severity == "error"]
    assert (problem.code, problem.step, problem.line) == ("schema.invalid", "test", 16)
    assert "reserved for the control group" in problem.message
