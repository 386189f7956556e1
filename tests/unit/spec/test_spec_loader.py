"""The loader end to end: the cart-abandonment example, bundles and hashes, many problems at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import NotFound, ScenarioInvalid
from engine.spec import model
from engine.spec.lint import NOT_SCENARIOS
from engine.spec.loader import (
    content_hash,
    lint_text,
    load_bundle,
    load_scenario_file,
    load_scenario_text,
    scenario_bundle,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p for p in (ROOT / "scenarios").glob("*.y*ml") if p.name not in NOT_SCENARIOS)
LineOf = Callable[[str, str], int]


def codes(problems: list[object]) -> list[str]:
    return [p.code for p in problems]  # type: ignore[attr-defined]


def test_cart_example_compiles(cart_dir: Path) -> None:
    scenario = load_scenario_file(cart_dir / "cart-abandonment.yaml")
    assert scenario.id == "cart-abandonment" and scenario.start == "wait-1h"
    assert [s.type for s in scenario.steps.values()] == [
        "wait",
        "send",
        "wait_event",
        "send",
        "exit",
    ]
    assert scenario.entry == model.EntryRules(reentry="cooldown", cooldown=timedelta(days=7))
    assert scenario.goal is not None and scenario.goal.within == timedelta(days=7)
    assert scenario.listened_events() == {"order_placed", "unsubscribed", "email_clicked"}
    assert set(scenario.templates) == {"cart-reminder", "sms:inline"}
    context = {"contact": {"first_name": "Ada"}, "event": {"cart_url": "https://s.example/c/1"}}
    assert scenario.templates["sms:inline"].render(context) == {
        "text": "Ada, your cart is waiting: https://s.example/c/1"
    }
    rendered = scenario.templates["cart-reminder"].render(
        {**context, "contact": {"first_name": "<b>"}}
    )
    assert "&lt;b&gt;" in rendered["html"] and "<b>" in rendered["text"]
    assert len(scenario.content_hash) == 64


def test_hash_is_the_bundle_hash(cart_dir: Path, templates_writer: Callable[..., None]) -> None:
    templates_writer(cart_dir, {"unused": {"text": "never used"}})
    path = cart_dir / "cart-abandonment.yaml"
    bundle = scenario_bundle(path)
    assert set(bundle) == {"yaml", "templates"} and set(bundle["templates"]) == {"cart-reminder"}
    assert json.loads(json.dumps(bundle)) == bundle
    scenario = load_scenario_file(path)
    assert scenario.content_hash == content_hash(bundle)
    stored = load_bundle(json.loads(json.dumps(bundle)))
    assert stored.content_hash == scenario.content_hash
    assert set(stored.templates) == set(scenario.templates)
    (cart_dir / "templates" / "cart-reminder" / "subject.txt").write_text(
        "Changed", encoding="utf-8"
    )
    assert load_scenario_file(path).content_hash != scenario.content_hash


def test_bundle_templates_replace_the_disk(cart_yaml: str, cart_template: dict[str, str]) -> None:
    scenario = load_bundle({"yaml": cart_yaml, "templates": {"cart-reminder": cart_template}})
    assert "cart-reminder" in scenario.templates
    with pytest.raises(ScenarioInvalid) as info:
        load_bundle({"yaml": cart_yaml, "templates": {}})
    assert codes(info.value.problems) == ["template.missing"]
    with pytest.raises(ScenarioInvalid) as info:
        load_bundle({"yaml": 3})
    assert codes(info.value.problems) == ["bundle.invalid"]


def test_errors_raise_warnings_do_not(cart_yaml: str, cart_template: dict[str, str]) -> None:
    sources = {"cart-reminder": cart_template}
    scenario = load_scenario_text(cart_yaml, "other-name.yaml", template_sources=sources)
    assert scenario.id == "cart-abandonment"
    _, problems = lint_text(cart_yaml, "other-name.yaml", template_sources=sources)
    assert [(p.code, p.severity, p.line) for p in problems] == [("scenario.filename", "warning", 3)]
    with pytest.raises(ScenarioInvalid) as info:
        load_scenario_text(cart_yaml.replace("next: done", "next: dnoe"), template_sources=sources)
    assert {p.severity for p in info.value.problems} == {"error"}
    assert "graph.missing_step" in codes(info.value.problems)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_scenario_file(tmp_path / "nope.yaml")


def test_templates_are_needed_from_somewhere(cart_yaml: str) -> None:
    scenario, problems = lint_text(cart_yaml)
    assert scenario is None
    assert [(p.code, p.step, p.field) for p in problems] == [
        ("template.missing", "reminder", "steps.reminder.template")
    ]


def test_many_problems_are_reported_at_once(cart_yaml: str, line_of: LineOf) -> None:
    text = (
        cart_yaml.replace("priority: 60", "priority: high")
        .replace("reentry: cooldown", "reentry: cooldwn")
        .replace("    op: gte", "    op: greater")
        .replace("  within: 7d", "  within: 7d\n  evnt: order")
        .replace("duration: 1h", "duraton: 1h")
        .replace("next: wait-click", "next: wait-clik")
        .replace("type: exit", "type: exitt")
        .replace("timeout: 2d", "timeout: soon")
        .replace("channel: sms", "channel: smss")
    )
    scenario, problems = lint_text(text, "cart-abandonment.yaml")
    assert scenario is None
    found = {(p.code, p.field, p.line) for p in problems}
    expected = {
        ("schema.invalid", "priority", line_of(text, "priority: high")),
        ("schema.invalid", "entry.reentry", line_of(text, "cooldwn")),
        ("schema.invalid", "triggers.0.where.0.op", line_of(text, "op: greater")),
        ("schema.unknown_field", "goal.evnt", line_of(text, "evnt: order")),
        ("schema.unknown_field", "steps.wait-1h.duraton", line_of(text, "duraton")),
        ("schema.required", "steps.wait-1h.duration", line_of(text, "wait-1h:")),
        ("graph.missing_step", "steps.reminder.next", line_of(text, "wait-clik")),
        ("schema.invalid", "steps.done.type", line_of(text, "exitt")),
        ("schema.invalid", "steps.wait-click.timeout", line_of(text, "timeout: soon")),
        # a step that loads still gets its channel checked while others are broken
        ("channel.unknown", "steps.sms.channel", line_of(text, "channel: smss")),
    }
    assert expected <= found, sorted(found)
    assert len({p.code for p in problems}) >= 5 and len(problems) >= 10
    lines = [p.line or 0 for p in problems]
    assert lines == sorted(lines)
    assert all(p.file == "cart-abandonment.yaml" for p in problems)


@pytest.mark.parametrize(
    ("old", "new", "field", "hint"),
    [
        ("duration: 1h", "duraton: 1h", "steps.wait-1h.duraton", "did you mean 'duration'?"),
        ("next: wait-click", "next: wait-clik", "steps.reminder.next", "did you mean 'wait-click'?"),
        ("type: wait_event", "type: wait_evnt", "steps.wait-click.type", "did you mean 'wait_event'?"),
        ("on_timeout: sms", "on_timout: sms", "steps.wait-click.on_timout",
         "did you mean 'on_timeout'?"),
        ("- event: cart_abandoned", "- evnt: cart_abandoned", "triggers.0.evnt",
         "did you mean 'event'?"),
        ("  cooldown: 7d", "  cooldwn: 7d", "entry.cooldwn", "did you mean 'cooldown'?"),
        ("        value: 20", "        vaule: 20", "triggers.0.where.0.vaule", "did you mean 'value'?"),
    ],
)  # fmt: skip
def test_did_you_mean(cart_yaml: str, old: str, new: str, field: str, hint: str) -> None:
    assert old in cart_yaml
    _, problems = lint_text(cart_yaml.replace(old, new))
    matching = [p for p in problems if p.field == field]
    assert matching and matching[0].hint == hint, [p.format() for p in problems]


def test_did_you_mean_uses_yaml_names_of_fields() -> None:
    text = """\
format_version: 1
id: cond
name: Cond
objective: other
triggers: [{manual: true}]
steps:
  check:
    type: condition
    if: {tag: vip}
    then: done
    els: done
  pick:
    type: switch
    cases:
      - whn: {tag: vip}
        next: done
  done:
    type: exit
"""
    _, problems = lint_text(text)
    hints = {p.field: p.hint for p in problems if p.code == "schema.unknown_field"}
    assert hints == {
        "steps.check.els": "did you mean 'else'?",
        "steps.pick.cases.0.whn": "did you mean 'when'?",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_scenario_loads_cleanly(path: Path) -> None:
    scenario, problems = lint_text(
        path.read_text(encoding="utf-8"), str(path), path.parent / "templates"
    )
    assert problems == [] and scenario is not None


def _mutations(text: str) -> st.SearchStrategy[str]:
    lines = text.splitlines(keepends=True)
    return st.lists(st.integers(0, len(lines) - 1), max_size=6).map(
        lambda drop: "".join(line for i, line in enumerate(lines) if i not in drop)
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(
        ["wait", "send", "next", "steps", "1h", "email", "{{ x }}", "type", "if", "all"]
    ),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["type", "steps", "next", "if", "all", "event", "op", "x"]),
                      inner, max_size=4),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_lint_never_raises(cart_yaml: str, data: st.DataObject) -> None:
    text = data.draw(_mutations(cart_yaml))
    _, problems = lint_text(text, template_sources={})
    assert problems
    doc = json.loads(json.dumps({"format_version": 1, "id": "x", "name": "x", "objective": "other",
                                 "triggers": [{"manual": True}],
                                 "steps": data.draw(json_values)}))  # fmt: skip
    scenario, problems = lint_text(json.dumps(doc))
    assert scenario is not None or problems
