"""The JSON Schema export: valid draft 2020-12, accepts every example, rejects wrong shapes.

Needs the `jsonschema` package (test extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.spec import conditions
from engine.spec.jsonschema import condition_forms, scenario_json_schema
from engine.spec.lint import NOT_SCENARIOS
from engine.spec.nodes import NODE_TYPES
from engine.spec.yamlio import parse_yaml

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = [
    "cart",
    *sorted(str(p) for p in (ROOT / "scenarios").glob("*.y*ml") if p.name not in NOT_SCENARIOS),
]


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = scenario_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_is_titled_json(validator: Any) -> None:
    schema = scenario_json_schema()
    assert schema["title"] == "Parcours scenario"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(json.dumps(schema)) == schema


def test_every_node_type_is_a_step_option() -> None:
    defs = scenario_json_schema()["$defs"]
    options = [ref["$ref"].rsplit("/", 1)[1] for ref in defs["step"]["oneOf"]]
    assert options == [f"step_{t}" for t in NODE_TYPES]
    for node in NODE_TYPES.values():
        step = defs[f"step_{node.type}"]
        assert step["properties"]["type"] == {"const": node.type}
        assert step["description"] == node.help
    assert defs["step_wait"]["properties"]["duration"]["description"] == (
        "How long to wait, e.g. 1h, 2d, 1w."
    )


def test_condition_forms_follow_the_parser() -> None:
    forms = condition_forms()
    assert set(forms) == set(conditions._FORMS)
    assert set(forms["event"]["properties"]) == conditions._EVENT_KEYS


@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_validate(example: str, cart_yaml: str, validator: Any) -> None:
    text = cart_yaml if example == "cart" else Path(example).read_text(encoding="utf-8")
    data, _ = parse_yaml(text)
    assert [e.message for e in validator.iter_errors(data)] == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("priority: 60", "priority: high"),
        ("type: wait\n", "type: wiat\n"),
        ("duration: 1h", "duration: soon"),
        ("    op: gte", "    op: greater"),
        ("  cooldown: 7d", "  cooldown: 7d\n  extra: 1"),
        ("format_version: 1", "format_version: 2"),
    ],
)
def test_wrong_shapes_are_rejected(cart_yaml: str, validator: Any, old: str, new: str) -> None:
    assert old in cart_yaml
    data, _ = parse_yaml(cart_yaml.replace(old, new))
    assert list(validator.iter_errors(data))
