"""The `experiment:` block of a split step: loaded with its defaults, its mistakes located
(file:line, field path), in the JSON Schema the editors read, and kept by the designer's round
trip (the canvas document merged back gives the same text)."""

from __future__ import annotations

import jsonschema
import pytest

from engine.spec.jsonschema import scenario_json_schema
from engine.spec.loader import lint_text
from engine.spec.model import Experiment, SplitStep
from engine.spec.yamlio import apply_text, parse_yaml

TEXT = """\
format_version: 1
id: promo
name: Promo
objective: activation
triggers:
  - event: signed_up
steps:
  test:
    type: split
    holdout: 10
    experiment:
{experiment}
    branches:
      - name: a
        weight: 50
        next: done
      - name: b
        weight: 50
        next: done
  done:
    type: exit
"""


def text(experiment: str) -> str:
    return TEXT.format(experiment="\n".join("      " + line for line in experiment.splitlines()))


def step_of(source: str) -> SplitStep:
    scenario, problems = lint_text(source, "promo.yaml")
    assert scenario is not None, [p.format() for p in problems]
    step = scenario.steps["test"]
    assert isinstance(step, SplitStep)
    return step


def errors(source: str) -> list[str]:
    return [p.format() for p in lint_text(source, "promo.yaml")[1] if p.severity == "error"]


def test_defaults_and_every_field() -> None:
    assert step_of(text("mode: fixed")).experiment == Experiment()
    full = step_of(text("mode: sequential\nalpha: 0.01\nmin_effect: 0.02\npower: 0.9\ntau: 0.03\n"
                        "auto_winner: true\nbandit: {floor: 0.2}\nwinner: b"))  # fmt: skip
    assert full.experiment == Experiment("sequential", 0.01, 0.02, 0.9, 0.03, True, 0.2, "b")
    assert step_of(text("bandit: {}")).experiment.bandit_floor == 0.1


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            "winner: c",
            "promo.yaml:12:15: error [schema.invalid] step 'test' field steps.test.experiment.winner: 'c' is not a branch of this split (branches: a, b).",
        ),
        ("mode: daily", "steps.test.experiment.mode"),
        ("alpha: 0.5", "steps.test.experiment.alpha"),
        ("bandit: {floor: 0.6}", "steps.test.experiment.bandit.floor"),
        ("auto_winner: true", "needs 'min_effect'"),
        ("colour: blue", "steps.test.experiment.colour"),
    ],
)
def test_mistakes_are_located(block: str, expected: str) -> None:
    found = errors(text(block))
    assert any(expected in e for e in found), found


def test_the_json_schema_accepts_the_block_and_refuses_a_typo() -> None:
    validator = jsonschema.Draft202012Validator(scenario_json_schema())
    good, _ = parse_yaml(
        text("mode: sequential\nmin_effect: 0.02\nbandit: {floor: 0.1}\nwinner: a")
    )
    assert list(validator.iter_errors(good)) == []
    bad, _ = parse_yaml(text("mode: weekly"))
    assert list(validator.iter_errors(bad))


def test_the_designer_round_trip_keeps_the_block() -> None:
    source = text("mode: sequential  # safe to read daily\nmin_effect: 0.02\nbandit: {floor: 0.1}")
    doc, _ = parse_yaml(source)
    assert apply_text(source, doc) == source
    doc["steps"]["test"]["experiment"]["winner"] = "b"
    changed = apply_text(source, doc)
    assert "    experiment:\n      mode: sequential  # safe to read daily\n" in changed
    assert step_of(changed).experiment.winner == "b"
