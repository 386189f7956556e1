"""Plain message parts render without Jinja, to exactly the text Jinja renders."""

from __future__ import annotations

from typing import Any

import pytest
from markupsafe import Markup

from engine.spec.expressions import CompiledTemplate, RenderError
from engine.spec.templates import PlannedTemplate, compile_planned

PARTS = {
    "subject": "Hello {{ contact.first_name }}",
    "text": "Dear {{ contact.first_name }},\nyour score is {{ contact.score }}.\n",
    "html": "<p>{{ contact.first_name }} ({{ scenario.name }})</p>",
}
VALUES: list[Any] = [
    "Ada",
    "<b>Bob & co</b>",
    "",
    None,
    0,
    -3,
    2.5,
    True,
    Markup("<i>safe</i>"),
    ["a", "b"],
    {"k": 1},
    "x" * 20_000,
]


def _jinja(template: CompiledTemplate, context: dict[str, Any]) -> dict[str, str] | str:
    try:
        return CompiledTemplate.render(template, context)
    except RenderError as exc:
        return exc.code


def _planned(template: CompiledTemplate, context: dict[str, Any]) -> dict[str, str] | str:
    try:
        return template.render(context)
    except RenderError as exc:
        return exc.code


def test_plain_parts_are_planned_and_render_without_jinja(monkeypatch: pytest.MonkeyPatch) -> None:
    template = compile_planned("welcome", PARTS)
    assert isinstance(template, PlannedTemplate) and template.plans is not None

    def no_jinja(self: CompiledTemplate, context: Any) -> dict[str, str]:
        raise AssertionError("rendered through Jinja")

    monkeypatch.setattr(CompiledTemplate, "render", no_jinja)
    out = template.render({"contact": {"first_name": "Ada", "score": 7}, "scenario": {"name": "W"}})
    assert out == {
        "subject": "Hello Ada",
        "text": "Dear Ada,\nyour score is 7.",
        "html": "<p>Ada (W)</p>",
    }


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__ + repr(v)[:12])
def test_same_text_as_jinja_whatever_the_value(value: Any) -> None:
    template = compile_planned("welcome", PARTS)
    for contact in ({"first_name": value, "score": value}, {}, {"score": 1}):
        context = {"contact": contact, "scenario": {"name": value}}
        assert _planned(template, context) == _jinja(template, context)


@pytest.mark.parametrize("holder", [None, "text", 3, ["x"]])
def test_a_variable_that_is_not_a_mapping_renders_as_jinja_does(holder: Any) -> None:
    template = compile_planned("welcome", PARTS)
    context = {"contact": holder, "scenario": {"name": "W"}}
    assert _planned(template, context) == _jinja(template, context)


@pytest.mark.parametrize(
    "source",
    [
        "{{ contact.first_name | upper }}",
        "{% if contact.vip %}VIP{% endif %}",
        "{{ contact['first_name'] }}",
        "{{ contact.items }}",
        "{{ now }}",
        "{{ contact.address.city }}",
        "{{ contact.first_name ~ '!' }}",
    ],
)
def test_anything_else_goes_through_jinja(source: str) -> None:
    template = compile_planned("t", {"text": source})
    assert not isinstance(template, PlannedTemplate)
    context = {"contact": {"first_name": "Ada", "vip": True, "address": {"city": "Lyon"}}}
    assert _planned(template, context) == _jinja(template, context)
